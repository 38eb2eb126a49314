"""Benchmark of the evaluation harness; prints a table.

    DSNET_ZOO_DATA=../shared/data python benchmarks/bench_eval.py [--model lipnet_cifar10] [--aa-n 4]

1. clean + certified accuracy on a whole test set (``--dataset``, default ``cifar10-full``: CIFAR-10 test,
   9,977 real images), CPU, with the model's forward pass alone as the reference;
2. standard AutoAttack on the first ``--aa-n`` images, on CPU (and on the GPU when one is present), twice in the
   same run: on every correct point (``full``) and certificate-aware (certified points skipped, a sample of them
   attacked as a check), with the ratio of wall times and whether the robust accuracies agree;
3. the paper's PGD protocol (``paper-pgd``) on the same images.
Every row gives seconds per 1,000 images.

``--model`` is a registered ``arch[.tag]`` (pretrained weights when the name has them, else random weights),
or ``standin``: a ZooClassifier with the paper's CIFAR-10 shapes (three blocks of width 32/64/128, each a
3x3 lift conv, ReLU, four non-expansive steps ``x - A^T relu(A x + b)`` with ``||A|| <= 1``, 2x2 max-pool;
linear head 2048 -> 10; 0.89 M parameters) and a provable Lipschitz bound, for timing before the zoo's
lipnet exists. With random weights almost every image is misclassified and AutoAttack would skip it, so
AutoAttack timings of a model without pretrained weights use the model's own predictions as labels
(every point is attacked); the table says which labels were used.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dsnet_zoo.models import ZooClassifier  # noqa: E402

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2023, 0.1994, 0.2010)


def _conv_norm_bound(w: torch.Tensor) -> torch.Tensor:
    """``sum_{p,q} ||W[:, :, p, q]||_2``: a zero-padded conv is a sum of shifted channel maps, each shift
    a contraction, so this bounds its spectral norm (loosely, but provably)."""
    return torch.linalg.matrix_norm(w.permute(2, 3, 0, 1), ord=2).sum()


class _NormConv(nn.Module):
    def __init__(self, cin: int, cout: int, bias: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(cout, cin, 3, 3) / math.sqrt(9 * cin))
        self.bias = nn.Parameter(torch.zeros(cout)) if bias else None

    def normalized(self) -> torch.Tensor:
        if self.training or self.weight.requires_grad:
            return self.weight / _conv_norm_bound(self.weight).clamp(min=1.0)
        # frozen weights (evaluation): normalise once, as a deployed 1-Lipschitz layer would
        key = (self.weight._version, self.weight.data_ptr(), self.weight.device)
        if getattr(self, "_cache_key", None) != key:
            self._cache = self.weight / _conv_norm_bound(self.weight).clamp(min=1.0)
            self._cache_key = key
        return self._cache

    def forward(self, x):
        return F.conv2d(x, self.normalized(), self.bias, padding=1)


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, steps: int = 4) -> None:
        super().__init__()
        self.lift = _NormConv(cin, cout, bias=False)
        self.convs = nn.ModuleList(_NormConv(cout, cout, bias=True) for _ in range(steps))

    def forward(self, x):
        x = F.relu(self.lift(x))
        for c in self.convs:
            a = c.normalized()
            # gradient step with h = 1 <= 2 / ||A||^2 on a monotone 1-slope activation: non-expansive
            x = x - F.conv_transpose2d(F.relu(F.conv2d(x, a, c.bias, padding=1)), a, padding=1)
        return F.max_pool2d(x, 2)


class StandIn(ZooClassifier):
    """Paper-shaped CIFAR-10 network; every layer but the head is 1-Lipschitz by construction."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.num_classes, self.num_features = num_classes, 2048
        self.register_buffer("mean", torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(CIFAR_STD).view(1, 3, 1, 1))
        self.blocks = nn.Sequential(_Block(3, 32), _Block(32, 64), _Block(64, 128))
        self.head = self._make_head(num_classes)

    def _make_head(self, num_classes):
        return nn.Linear(2048, num_classes)

    def forward_features(self, x):
        return self.blocks((x - self.mean) / self.std)

    def feature_lipschitz_upper_bound(self) -> float:
        """``1 / min(std)``: normalisation, then 1-Lipschitz layers."""
        return float(1.0 / self.std.double().min())

    def lipschitz_upper_bound(self) -> float:
        """``||W_head||_2 / min(std)`` with the head's spectral norm from an SVD in float64."""
        return float(torch.linalg.matrix_norm(self.head.weight.detach().double(), 2)) * (1 + 1e-9) \
            * self.feature_lipschitz_upper_bound()


def build(name: str):
    import dsnet_zoo
    from dsnet_zoo.registry import get_pretrained_cfg, split_model_name

    if name == "standin":
        torch.manual_seed(0)
        return StandIn().eval(), "standin (random weights)", False
    arch, tag = split_model_name(name)
    if arch not in dsnet_zoo.list_models():
        raise SystemExit(f"{arch!r} is not registered here; run with --model standin, or merge the branch that "
                         "adds it. Registered: " + ", ".join(dsnet_zoo.list_models()))
    cfg = get_pretrained_cfg(name)
    if cfg is not None:
        return dsnet_zoo.create(f"{arch}.{cfg.tag}", pretrained=True).eval(), f"{arch}.{cfg.tag}", True
    torch.manual_seed(0)
    return dsnet_zoo.create(arch).eval(), f"{arch} (random weights)", False


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="lipnet_cifar10")
    p.add_argument("--data-dir")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--aa-n", type=int, default=4, help="images attacked on CPU")
    p.add_argument("--aa-n-gpu", type=int, default=200, help="images attacked on the GPU")
    p.add_argument("--aa-threats", default="L2:0.5")
    p.add_argument("--aa-cert-sample", type=int, default=32,
                   help="certified points attacked as the cross-check in the certificate-aware run")
    p.add_argument("--dataset", default="cifar10-full")
    p.add_argument("--skip-aa", action="store_true")
    p.add_argument("--skip-pgd", action="store_true")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from dsnet_zoo.cli.eval_cmd import parse_threats
    from dsnet_zoo.data import load_dataset
    from dsnet_zoo.evaluation import evaluate

    model, label, pretrained = build(args.model)
    data = load_dataset(args.dataset, data_dir=args.data_dir)
    rows = []
    ident = {"name": label, "model": label, "tag": None, "checkpoint": None}

    with torch.no_grad():
        model(data.float_batch(0, 8)[0])  # warm-up (allocator, cached normalised weights)
    t = time.time()
    with torch.no_grad():
        for lo in range(0, len(data), args.batch_size):
            model(data.float_batch(lo, lo + args.batch_size)[0])
    fwd = time.time() - t
    rows.append(("forward pass only (reference)", "cpu", len(data), f"{fwd:.1f} s",
                 f"{1000 * fwd / len(data):.2f}", "the model alone, same batches"))

    t = time.time()
    res = evaluate(model, data, metrics=["clean", "certified"], device="cpu", batch_size=args.batch_size,
                   progress=False, ident=ident)
    wall = time.time() - t
    cert = res["metrics"]["certified"]["accuracy"]["L2:36/255"]
    cert_txt = "null" if cert is None else f"{100 * cert:.1f}%"
    rows.append(("clean+certified", "cpu", len(data), f"{wall:.1f} s", f"{1000 * wall / len(data):.2f}",
                 f"clean {100 * res['metrics']['clean']['accuracy']:.1f}%, cert@36/255 {cert_txt}, "
                 f"{'PASS' if 1000 * wall / len(data) < 29.5 else 'FAIL'} (target: 30 s per 1,017 images)"))

    if not args.skip_aa:
        threats = parse_threats(args.aa_threats)
        devices = [("cpu", args.aa_n)] + ([("cuda", args.aa_n_gpu)] if torch.cuda.is_available() else [])
        for dev, n in devices:
            sub = data.subset(n)
            labels = "true"
            if not pretrained:
                with torch.no_grad():
                    pred = model(sub.float_batch(0, n)[0]).argmax(1)
                sub = type(sub)(sub.name, sub.split, sub.x, pred, sub.indices, sub.num_classes, sub.info)
                labels = "model's predictions"
            walls, accs = {}, {}
            for mode in ("full", "auto"):
                t = time.time()
                res = evaluate(model, sub, metrics=["certified", "autoattack"], aa_threats=threats, device=dev,
                               batch_size=n, progress=False, ident=ident, aa_mode=mode,
                               aa_cert_sample=args.aa_cert_sample)
                walls[mode] = wall = time.time() - t
                aa = res["metrics"]["autoattack"]
                accs[mode] = acc = aa["accuracy"]
                cost = "; ".join(f"{k}: attacked {c['attacked']}, certified skipped {c['certified_skipped']}, "
                                 f"sampled {c['certified_sampled']}" for k, c in aa["cost"].items())
                rows.append((f"AutoAttack {args.aa_threats}, {aa['mode']}", res["run"]["device"], n, f"{wall:.1f} s",
                             f"{1000 * wall / n:.0f}",
                             f"labels: {labels}; robust {', '.join(f'{k} {100 * v:.1f}%' for k, v in acc.items())}; "
                             + cost))
            same = "equal" if accs["full"] == accs["auto"] else "DIFFERENT"
            rows.append(("certificate-aware / full", res["run"]["device"], n, f"{walls['auto'] / walls['full']:.2f}x",
                         "", f"robust accuracies {same}"))
    if not args.skip_pgd:
        n = args.aa_n
        t = time.time()
        res = evaluate(model, data.subset(n), metrics=["paper-pgd"], device="cpu", batch_size=n, progress=False,
                       ident=ident)
        wall = time.time() - t
        rows.append(("paper-pgd (Foolbox L2PGD 10 steps, 8 eps)", res["run"]["device"], n, f"{wall:.1f} s",
                     f"{1000 * wall / n:.0f}", ""))

    print(f"\nmodel: {label}; data: {data.info.get('description', data.name)}; torch {torch.__version__}; "
          f"{torch.get_num_threads()} CPU thread(s)\n")
    head = ("what", "device", "images", "wall", "s per 1,000 images", "notes")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        print("| " + " | ".join(str(c) for c in r) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
