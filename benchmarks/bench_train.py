"""Training throughput of each structured family against an unconstrained network of the same shapes.

For every family registered (LipNet, HamNet, VPNet, MassNet) it builds the zoo model and its
*unconstrained twin*, then times full training steps (forward, loss, backward, SGD step)
alternately on the two, in one process, so the ratio is measured under the same load:

- LipNet (layers with ``_compute_weight``, the constrained maps of :mod:`dsnet_zoo.layers.constrained_linear`):
  every gradient step ``x - h A^T relu(A x + b)`` and every constrained lift/head run with the raw
  weight and a free step size: the same convolutions, no norm bounds, no normalisation. (Switching
  off the layers' ``normalize`` flag is not a fair twin: the steps then bound ``A`` exactly at
  every training step to set their step size, which is slower than the constrained model.)
- HamNet / VPNet (``structure_blocks()`` of kind symplectic / volume): every structured block
  replaced by a plain residual block ``x + h conv2(act(conv1(x)))`` with the same width and the
  same convolution FLOPs (HamNet: hidden width of the block; VPNet: half the half-width).
- MassNet (kind mass): the same perceptrons without the antisymmetric flux assembly
  (``x + h a(x)[:, :n]``) and plain linear lifts/projections without the column-sum constraint.

``--lipnet-paths`` measures instead, in one run, what the certified flagship's training path buys
(CPU, one table, each row against its unconstrained twin under the same load):

- the paper-layout LipNet (``lipnet_conv_cifar10``) in the previous CPU path (float32, NCHW: what
  ``dsnet-zoo train`` ran with ``amp='auto'`` on a CPU) and in the new one (bf16 autocast with float32
  normalisers, channels_last);
- the flagship ``lipnet_cifar10`` (:class:`~dsnet_zoo.models.lipflow.LipFlowNet`) in the new path and its
  same-shape unconstrained twin (the issue's target: at most 1.25x the twin's step time).

``--structured-paths`` does the same for HamNet and VPNet: each in float32 NCHW and in bf16 autocast with
channels_last (the path of their recipes), against its twin.

Usage (prints a Markdown table; ``--json`` writes the numbers too)::

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/bench_train.py --device cpu --iters 5
    PYTHONPATH=. python benchmarks/bench_train.py --lipnet-paths --batch-size 256 --iters 20
    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/bench_train.py --structured-paths --batch-size 256 --iters 5
    PYTHONPATH=. python benchmarks/bench_train.py --device cuda --amp bf16 --batch-size 256 --iters 50
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dsnet_zoo  # noqa: E402
from dsnet_zoo.training.loop import _float32_islands  # noqa: E402

FAMILIES = [("lipnet", "lipnet_cifar10"), ("hamnet", "hamnet_cifar10"), ("vpnet", "vpnet_cifar10"),
            ("massnet", "massnet_sir")]


class PlainConvResidual(nn.Module):
    def __init__(self, channels: int, hidden: int, kernel_size: int = 3, step: float = 0.2):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, hidden, kernel_size, padding=kernel_size // 2)
        self.conv2 = nn.Conv2d(hidden, channels, kernel_size, padding=kernel_size // 2)
        self.step = nn.Parameter(torch.tensor(step))

    def forward(self, x):
        return x + self.step * self.conv2(F.silu(self.conv1(x)))


class PlainMassTwin(nn.Module):
    """The mass block's perceptron without the flux assembly (first ``n`` outputs added)."""

    def __init__(self, block: nn.Module):
        super().__init__()
        self.fc1, self.fc2 = copy.deepcopy(block.fc1), copy.deepcopy(block.fc2)
        self.act, self.out_act, self.n = block.act, block.out_act, block.features
        self.step = nn.Parameter(block.step.detach().clone())
        if self.fc2.out_features < self.n:
            raise ValueError("twin needs n(n-1)/2 >= n")

    def forward(self, x):
        return x + self.step * self.out_act(self.fc2(self.act(self.fc1(x))))[:, : self.n]


class PlainMap(nn.Module):
    """A constrained linear map run with its raw weight: same operator, no normalisation."""

    def __init__(self, cmap: nn.Module):
        super().__init__()
        object.__setattr__(self, "_map", cmap)  # config only; its parameters are re-registered here
        self.weight, self.bias = cmap.raw_weight, cmap.bias

    def forward(self, x):
        return self._map.op(x, self.weight, self.bias)


class PlainGradientStep(nn.Module):
    """``x -/+ h A^T relu(A x + b)`` with the raw ``A`` and a free step: no bounds, no normalisation."""

    def __init__(self, step: nn.Module, sign: float):
        super().__init__()
        object.__setattr__(self, "_map", step.A)
        self.weight, self.bias = step.A.raw_weight, step.A.bias
        self.h = nn.Parameter(torch.tensor(0.5))
        self.sign = sign

    def forward(self, x):
        z = F.relu(self._map.op(x, self.weight, self.bias))
        return x + self.sign * self.h * self._map.adjoint(z, self.weight)


def _lipschitz_twin(twin: nn.Module) -> int:
    """Replace LipNet's gradient steps and constrained maps by plain ones; returns how many."""
    names = [n for n, m in twin.named_modules() if hasattr(m, "A") and hasattr(getattr(m, "A"), "raw_weight")]
    count = 0
    for name in names:
        m = twin.get_submodule(name)
        kind = type(m).__name__
        if kind not in ("ContractiveStep", "ExpansiveStep") or getattr(m, "form", "gradient") != "gradient":
            raise ValueError(f"no unconstrained twin for {kind} at {name}")
        _set_module(twin, name, PlainGradientStep(m, -1.0 if kind == "ContractiveStep" else 1.0))
        count += 1
    for name in [n for n, m in twin.named_modules() if hasattr(m, "_compute_weight") and hasattr(m, "raw_weight")]:
        _set_module(twin, name, PlainMap(twin.get_submodule(name)))
        count += 1
    return count


def _set_module(root: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = root.get_submodule(parent_name) if parent_name else root
    setattr(parent, attr, new)


def unconstrained_twin(model: nn.Module) -> tuple[nn.Module, str]:
    """A copy of ``model`` without its structure (see the module doc) and a one-line description."""
    twin = copy.deepcopy(model)
    if any(hasattr(m, "_compute_weight") for m in twin.modules()):
        n = _lipschitz_twin(twin)
        return twin, f"{n} constrained layers run with their raw weights (same convs, no bounds/normalisation)"
    blocks = getattr(twin, "structure_blocks", None)
    if blocks is None:
        raise ValueError(f"{type(model).__name__}: no constrained layers or structured blocks to remove")
    replaced, kinds = 0, set()
    for name, block, kind in blocks():
        if name == "model":
            continue
        if kind == "symplectic":
            hidden, m = block.weight_p.shape[:2]
            _set_module(twin, name, PlainConvResidual(2 * m, hidden, block.weight_p.shape[-1]))
        elif kind == "volume":
            m = block.weight_v.shape[0]
            _set_module(twin, name, PlainConvResidual(2 * m, max(1, m // 2), block.weight_v.shape[-1]))
        elif kind == "mass" and hasattr(block, "fc1"):
            _set_module(twin, name, PlainMassTwin(block))
        elif kind == "mass" and hasattr(block, "in_features"):
            _set_module(twin, name, nn.Linear(block.in_features, block.out_features, bias=False))
        else:
            raise ValueError(f"no unconstrained twin for block {name} of kind {kind}")
        replaced += 1
        kinds.add(kind)
    if kinds == {"mass"}:
        return twin, f"{replaced} mass-preserving layers replaced (same perceptrons, no flux assembly, plain lifts)"
    return twin, f"{replaced} structured blocks replaced by plain residual blocks (same widths, same conv FLOPs)"


def _step_fn(model, opt, x, y, task, amp_dtype, device_type):
    def step():
        with torch.autocast(device_type=device_type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            out = model(x)
        loss = F.cross_entropy(out.float(), y) if task == "classification" else F.mse_loss(out.float(), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def _time(fn, device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t


def bench_family(arch: str, device: torch.device, batch: int, iters: int, warmup: int, amp: str,
                 channels_last: bool = False, model_args: dict | None = None) -> dict:
    torch.manual_seed(0)
    model = dsnet_zoo.create(arch, **(model_args or {})).to(device).train()
    twin, how = unconstrained_twin(model)
    twin = twin.to(device).train()
    if channels_last:
        model, twin = model.to(memory_format=torch.channels_last), twin.to(memory_format=torch.channels_last)
    if getattr(model, "num_classes", 0):
        x = torch.rand(batch, 3, 32, 32, device=device)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        y = torch.randint(0, model.num_classes, (batch,), device=device)
        task = "classification"
    else:
        x = torch.rand(batch, model.in_features, device=device)
        x = x / x.sum(1, keepdim=True)
        y = x.clone()
        task = "regression"
    amp_dtype = torch.bfloat16 if amp == "bf16" else None
    if amp_dtype is not None:
        _float32_islands(model, device.type)
        _float32_islands(twin, device.type)
    steps = {}
    for key, net in (("model", model), ("twin", twin)):
        opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
        steps[key] = _step_fn(net, opt, x, y, task, amp_dtype, device.type)
    for _ in range(warmup):
        steps["model"](), steps["twin"]()
    times = {"model": [], "twin": []}
    for _ in range(iters):  # alternate, so both see the same machine load
        for key in ("model", "twin"):
            times[key].append(_time(steps[key], device))
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"arch": arch, "task": task, "batch": batch, "iters": iters, "amp": amp, "channels_last": channels_last,
            "params": sum(p.numel() for p in model.parameters()),
            "twin_params": sum(p.numel() for p in twin.parameters()), "twin": how,
            "model_per_s": batch / med["model"], "twin_per_s": batch / med["twin"],
            "ratio": med["twin"] / med["model"]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--amp", default="none", choices=("none", "bf16"))
    p.add_argument("--families", nargs="*", help="subset of: " + ", ".join(f for f, _ in FAMILIES))
    p.add_argument("--json", help="also write the results to this JSON file")
    p.add_argument("--lipnet-paths", action="store_true",
                   help="the certified flagship's training path against the previous one (see the module doc)")
    p.add_argument("--structured-paths", action="store_true",
                   help="hamnet / vpnet in the float32 NCHW path and in the bf16 channels_last one (module doc)")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    if args.lipnet_paths:
        return lipnet_paths(device, args)
    if args.structured_paths:
        return structured_paths(device, args)
    rows = []
    for family, arch in FAMILIES:
        if args.families and family not in args.families:
            continue
        if not dsnet_zoo.registry.is_model(arch):
            print(f"# {family}: {arch} is not registered in this checkout, skipped", file=sys.stderr)
            continue
        batch = args.batch_size if family != "massnet" else max(args.batch_size, 100)
        rows.append({"family": family, **bench_family(arch, device, batch, args.iters, args.warmup, args.amp)})
    env = (f"device {device.type}" + (f" ({torch.cuda.get_device_name()})" if device.type == "cuda" else
                                      f" ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)")
           + f", torch {torch.__version__}, amp {args.amp}, median of {args.iters} alternating steps")
    print(f"Training throughput, {env}\n")
    print("| family | model | batch | params | examples/s | unconstrained twin examples/s | slowdown (model time / twin time) | twin |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['family']} | {r['arch']} | {r['batch']} | {r['params']:,} | {r['model_per_s']:.1f} | "
              f"{r['twin_per_s']:.1f} | {1 / r['ratio']:.2f} | {r['twin']} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"env": env, "rows": rows}, indent=2) + "\n")
    return 0


def lipnet_paths(device: torch.device, args) -> int:
    from dsnet_zoo.registry import get_pretrained_cfg

    cfg = get_pretrained_cfg("lipnet_cifar10", required=False)  # the flagship's shape, when it has weights
    flagship_args = dict(cfg.model_args) if cfg is not None else {}
    runs = [("paper layout, previous path (float32, NCHW)", "lipnet_conv_cifar10", "none", False, {}),
            ("paper layout, new path (bf16 autocast, channels_last)", "lipnet_conv_cifar10", "bf16", True, {}),
            ("flagship, new path (bf16 autocast, channels_last)", "lipnet_cifar10", "bf16", True, flagship_args)]
    return _paths_table("Certified LipNet training step", runs, device, args)


def structured_paths(device: torch.device, args) -> int:
    """HamNet and VPNet (the registered layouts their weights train with) in the float32 NCHW path and in the
    fast one (bf16 autocast, batch norms in float32, channels_last), each against its unconstrained twin."""
    runs = [(f"{arch}, {path}", arch, amp, cl, {})
            for arch in ("hamnet_cifar10", "vpnet_cifar10")
            for path, amp, cl in (("float32, NCHW", "none", False), ("bf16 autocast, channels_last", "bf16", True))]
    return _paths_table("HamNet / VPNet training step", runs, device, args, base_every=2)


def _paths_table(title: str, runs: list, device: torch.device, args, base_every: int | None = None) -> int:
    """One row per run; "vs previous path" compares with the first row (of each group of ``base_every``)."""
    rows = [{"what": what, **bench_family(arch, device, args.batch_size, args.iters, args.warmup, amp, cl, margs)}
            for what, arch, amp, cl, margs in runs]
    env = (f"device {device.type} ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads), "
           f"torch {torch.__version__}, batch {args.batch_size}, median of {args.iters} alternating steps")
    print(f"{title}, {env}\n")
    print("| what | model | params | images/s | vs previous path | unconstrained twin images/s | "
          "step time / twin step time |")
    print("|---|---|---|---|---|---|---|")
    for i, r in enumerate(rows):
        base = rows[i - i % base_every if base_every else 0]["model_per_s"]
        print(f"| {r['what']} | {r['arch']} | {r['params']:,} | {r['model_per_s']:.0f} | "
              f"{r['model_per_s'] / base:.2f}x | {r['twin_per_s']:.0f} | {r['ratio'] ** -1:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"env": env, "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
