"""Run a callback right after a module is first imported, without importing it ourselves.

``import dsnet_zoo`` must stay fast, and timm (with torchvision behind it) takes seconds to import, so
the zoo registers its architectures with timm only when the user's program imports timm: immediately
if it already has, else from a ``sys.meta_path`` finder that wraps the module's loader and calls back
once its body has run (the same mechanism as wrapt's post-import hooks).
"""
from __future__ import annotations

import importlib.abc
import importlib.util
import sys
import threading
import warnings
from typing import Any, Callable

__all__ = ["when_imported"]


class _CallbackLoader(importlib.abc.Loader):
    """Delegates everything to the real loader; calls back after ``exec_module``."""

    def __init__(self, loader: Any, name: str, finder: "_PostImportFinder") -> None:
        self._loader, self._name, self._finder = loader, name, finder

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        self._finder.fire()

    def __getattr__(self, attr: str) -> Any:  # resource readers, get_source, is_package ...
        return getattr(self._loader, attr)


class _PostImportFinder(importlib.abc.MetaPathFinder):
    def __init__(self, name: str) -> None:
        self.name = name
        self.callbacks: list[Callable[[], None]] = []
        self._local = threading.local()

    def find_spec(self, fullname, path=None, target=None):
        if fullname != self.name or getattr(self._local, "busy", False):
            return None
        self._local.busy = True  # the real lookup below goes through sys.meta_path again
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._local.busy = False
        if spec is None or spec.loader is None:
            return None
        spec.loader = _CallbackLoader(spec.loader, fullname, self)
        return spec

    def fire(self) -> None:
        if self in sys.meta_path:
            sys.meta_path.remove(self)
        callbacks, self.callbacks = self.callbacks, []
        for cb in callbacks:
            _call(cb, self.name)


def _call(callback: Callable[[], None], name: str) -> None:
    try:
        callback()
    except Exception as e:  # a broken optional integration must not break the user's import
        warnings.warn(f"dsnet_zoo could not set itself up for {name}: {type(e).__name__}: {e}", RuntimeWarning,
                      stacklevel=3)


def when_imported(name: str, callback: Callable[[], None]) -> None:
    """Call ``callback()`` now if the top-level module ``name`` is imported, else right after it is."""
    if "." in name:
        raise ValueError(f"only top-level modules can be watched, got {name!r}")
    if name in sys.modules:
        _call(callback, name)
        return
    for f in sys.meta_path:
        if isinstance(f, _PostImportFinder) and f.name == name:
            f.callbacks.append(callback)
            return
    finder = _PostImportFinder(name)
    finder.callbacks.append(callback)
    sys.meta_path.insert(0, finder)
