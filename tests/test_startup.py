"""Start-up: ``import dsnet_zoo`` does not import timm, and timm still sees every architecture whichever
of the two a program imports first."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("timm")


def _run(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    return out.stdout.strip()


def test_import_does_not_load_timm_or_torchvision():
    assert _run("import sys, dsnet_zoo; print(sorted(m for m in ('timm', 'torchvision') if m in sys.modules))") \
        == "[]"


def test_cli_help_and_list_do_not_load_timm():
    code = ("import sys, contextlib, io\n"
            "from dsnet_zoo.cli import main\n"
            "for argv in (['list'], ['--help']):\n"
            "    with contextlib.redirect_stdout(io.StringIO()):\n"
            "        try:\n"
            "            main(argv)\n"
            "        except SystemExit:\n"
            "            pass\n"
            "print('timm' in sys.modules)")
    assert _run(code) == "False"


@pytest.mark.parametrize("order", ["dsnet_zoo, timm", "timm, dsnet_zoo"])
def test_timm_sees_every_architecture_in_either_import_order(order):
    code = (f"import {order}\n"
            "ours = set(dsnet_zoo.list_models())\n"
            "theirs = set(timm.list_models())\n"
            "print(sorted(ours - theirs), len(ours))\n"
            "m = timm.create_model('lipnet_cifar10')\n"
            "print(type(m).__module__.split('.')[0])")
    missing, module = _run(code).splitlines()
    assert missing.startswith("[] ") and int(missing.split()[-1]) > 10
    assert module == "dsnet_zoo"


# ------------------------------------------------------------------------------------------------
# no import cycles: the module-level imports of dsnet_zoo form a DAG (issue 15: registry <-> hub was one)

PACKAGE = Path(__file__).resolve().parents[1] / "dsnet_zoo"


def _module_level_imports(tree: ast.Module):
    """Import statements that run when the module is imported: not those in functions, nor those under
    ``if TYPE_CHECKING:`` (annotations only); those in class bodies, ``try``, ``if`` and ``with`` count."""
    stack: list[ast.AST] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
            continue
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            stack.extend(node.orelse)
            continue
        stack.extend(c for c in ast.iter_child_nodes(node) if isinstance(c, (ast.stmt, ast.excepthandler)))


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_graph(package: Path = PACKAGE) -> dict[str, set[str]]:
    """``module -> modules of the package that importing it runs first``, from module-level imports (``ast``).

    ``from X import name`` depends on X (its body must have run to define ``name``); ``from X import sub``
    of a submodule on ``X.sub``; both on the packages above the target that are not above the importer
    (those are importing already, which is how every submodule is imported)."""
    root = package.name
    files = {}
    for f in sorted(package.rglob("*.py")):
        parts = list(f.relative_to(package.parent).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        files[".".join(parts[:-1] if is_pkg else parts)] = (f, is_pkg)
    graph: dict[str, set[str]] = {}
    for mod, (f, is_pkg) in files.items():
        deps: set[str] = set()
        here = set(_ancestors(mod))

        def add(target: str, names_read: bool) -> None:
            for t in _ancestors(target) + [target]:
                if t in files and t != mod and (t not in here or (t == target and names_read)):
                    deps.add(t)

        for node in _module_level_imports(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == root:
                        add(alias.name, names_read=False)
                continue
            if node.level:
                base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != root:
                continue
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                if sub in files:
                    add(sub, names_read=False)
                    add(target, names_read=False)
                else:
                    add(target, names_read=True)
        graph[mod] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                return path[path.index(d):] + [d]
            if d not in state and (cycle := visit(d)):
                return cycle
        state[m] = 2
        path.pop()
        return None

    for m in sorted(graph):
        if m not in state and (cycle := visit(m)):
            return cycle
    return None


def test_module_level_imports_have_no_cycle():
    graph = import_graph()
    assert {"dsnet_zoo.registry", "dsnet_zoo.hub.repo", "dsnet_zoo._timm"} <= set(graph)
    assert "dsnet_zoo.registry" in graph["dsnet_zoo.hub.repo"]  # the repo writer reads the registry ...
    assert not graph["dsnet_zoo.registry"]  # ... and the registry imports nothing of the package at run time
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_cycle_check_sees_a_cycle_through_a_package(tmp_path):
    pkg = tmp_path / "dsnet_zoo"
    (pkg / "hub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .registry import register\n__version__ = '1'\n")
    (pkg / "registry.py").write_text("from typing import TYPE_CHECKING\nfrom .hub.weights import W\n"
                                     "if TYPE_CHECKING:\n    from .hub import repo\n")
    (pkg / "hub" / "__init__.py").write_text("from .weights import W\nfrom .repo import write\n")
    (pkg / "hub" / "weights.py").write_text("W = 1\n")
    (pkg / "hub" / "repo.py").write_text("from ..registry import register\n\ndef f():\n    from .. import x\n")
    cycle = find_cycle(import_graph(pkg))  # the function-local `from .. import x` is not part of it
    assert cycle[0] == cycle[-1] and set(cycle) == {"dsnet_zoo.hub", "dsnet_zoo.hub.repo", "dsnet_zoo.registry"}
    (pkg / "hub" / "repo.py").write_text("from .. import __version__\n")  # a name of the importing package
    assert find_cycle(import_graph(pkg)) is not None
    (pkg / "hub" / "repo.py").write_text("from . import weights\n")
    assert find_cycle(import_graph(pkg)) is None


@pytest.mark.parametrize("name", ["registry.py", "_api.py", "_timm.py", "hub/__init__.py", "hub/repo.py",
                                  "hub/weights.py", "hub/server.py"])
def test_no_function_local_imports_of_the_package(name):
    """The imports that dodged the cycle are gone for good: within these modules, functions import only
    third-party modules that are slow or optional (timm, huggingface_hub), each with its reason."""
    tree = ast.parse((PACKAGE / name).read_text())
    local = [f"line {n.lineno}" for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
             for n in ast.walk(f) if isinstance(n, ast.ImportFrom) and (n.level or (n.module or "").startswith(
                 "dsnet_zoo"))]
    assert not local, f"dsnet_zoo/{name}: function-local imports of dsnet_zoo at {', '.join(local)}"
