"""What the Lipschitz constraints cost: LipNet against an unconstrained twin with the same conv shapes.

The twin has the same layout and operations (mean subtraction, lift conv + ReLU, four gradient steps
``x - h A^T relu(A x + b)`` per block, 2x2 max-pool, linear head) with plain, unconstrained weights.
In eval mode LipNet's normalised weights are cached, so its forward should cost the same; in training it
pays one warm-started power-iteration step per conv and, every ``cert_every`` steps, a certified bound.

Timings are interleaved (LipNet, twin, LipNet, twin, ...) in one run and the ratio is of medians, so a
shared machine's load affects both alike. Run, e.g.:

    OMP_NUM_THREADS=2 PYTHONPATH=. python benchmarks/bench_constraints.py --batch 256 --reps 7
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn

from dsnet_zoo.layers.functional import conv_adjoint, conv_op
from dsnet_zoo.models.lipnet import CIFAR10_MEAN, LipNet


class PlainNet(nn.Module):
    """LipNet's layout with unconstrained weights and step sizes (no certificate)."""

    def __init__(self, num_classes=10, widths=(32, 64, 128), depth=4, img_size=32):
        super().__init__()
        self.register_buffer("mean", torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1))
        self.lifts, self.convs, self.biases, self.lift_biases = (nn.ParameterList() for _ in range(4))
        self.steps = nn.ParameterList()
        c = 3
        for w in widths:
            self.lifts.append(nn.Parameter(torch.randn(w, c, 3, 3) * 0.1))
            self.lift_biases.append(nn.Parameter(torch.zeros(w)))
            for _ in range(depth):
                self.convs.append(nn.Parameter(torch.randn(w, w, 3, 3) * 0.05))
                self.biases.append(nn.Parameter(torch.zeros(w)))
                self.steps.append(nn.Parameter(torch.tensor(0.5)))
            c = w
        self.depth = depth
        self.head = nn.Linear(widths[-1] * (img_size // 2 ** len(widths)) ** 2, num_classes)

    def forward(self, x):
        x = x - self.mean
        k = 0
        for lift, lb in zip(self.lifts, self.lift_biases):
            x = F.relu(conv_op(x, lift, lb))
            for _ in range(self.depth):
                a = self.convs[k]
                x = x - self.steps[k] * conv_adjoint(F.relu(conv_op(x, a, self.biases[k])), a)
                k += 1
            x = F.max_pool2d(x, 2, 2)
        return self.head(torch.flatten(x, 1))


_DEVICE = torch.device("cpu")


def _time(fn) -> float:
    if _DEVICE.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    fn()
    if _DEVICE.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--reps", type=int, default=7, help="interleaved repetitions per measurement")
    ap.add_argument("--train-reps", type=int, default=10,
                    help="training-step repetitions; 10 = one certified refresh (cert_every) in the mean")
    ap.add_argument("--device", default="cpu", help="cpu (the issue's setting) or cuda")
    args = ap.parse_args(argv)
    global _DEVICE
    _DEVICE = torch.device(args.device)
    train_reps = args.train_reps
    torch.manual_seed(0)
    lip, plain = LipNet(10).to(_DEVICE), PlainNet(10).to(_DEVICE)
    convs_lip = sorted(tuple(p.shape) for n, p in lip.named_parameters() if n.endswith("raw_weight") and p.dim() == 4)
    convs_plain = sorted(tuple(p.shape) for p in plain.parameters() if p.dim() == 4)
    assert convs_lip == convs_plain, "the twin must have the same convolution shapes"
    x = torch.rand(args.batch, 3, 32, 32, device=_DEVICE)
    y = torch.randint(0, 10, (args.batch,), device=_DEVICE)

    rows = []
    # -- eval forward ----------------------------------------------------------------------------
    lip.eval()
    plain.eval()
    fill = _time(lambda: lip(x[:1]))  # first eval call: normalised weights computed and cached
    cert = _time(lip.lipschitz_upper_bound)
    with torch.no_grad():
        lip(x), plain(x)  # warm-up
        t_lip, t_plain = [], []
        for _ in range(args.reps):
            t_lip.append(_time(lambda: lip(x)))
            t_plain.append(_time(lambda: plain(x)))
    rows.append(("eval forward", statistics.median(t_lip), statistics.median(t_plain)))

    # -- training step ---------------------------------------------------------------------------
    lip.train()
    plain.train()
    opt_l = torch.optim.SGD(lip.parameters(), lr=1e-3)
    opt_p = torch.optim.SGD(plain.parameters(), lr=1e-3)

    def step(model, opt):
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        opt.step()

    step(lip, opt_l), step(plain, opt_p)  # warm-up
    t_lip, t_plain = [], []
    for _ in range(train_reps):
        t_lip.append(_time(lambda: step(lip, opt_l)))
        t_plain.append(_time(lambda: step(plain, opt_p)))
    # mean for LipNet too: the certified refresh every cert_every steps is part of its cost
    rows.append(("train step (median)", statistics.median(t_lip), statistics.median(t_plain)))
    rows.append(("train step (mean)", statistics.mean(t_lip), statistics.mean(t_plain)))

    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, batch {args.batch}, 32x32, {_DEVICE.type}, "
          f"{args.reps} eval / {train_reps} train interleaved repetitions, one run")
    print(f"{'measurement':<22}{'LipNet (s)':>12}{'plain (s)':>12}{'ratio':>8}")
    for name, a, b in rows:
        print(f"{name:<22}{a:>12.4f}{b:>12.4f}{a / b:>8.3f}")
    print(f"{'eval cache fill':<22}{fill:>12.4f}{'':>12}{'':>8}  (once per weight change)")
    print(f"{'certified bound':<22}{cert:>12.4f}{'':>12}{'':>8}  (lipschitz_upper_bound(), from cached weights)")
    lip.eval()
    print(f"certified Lipschitz bound of LipNet: {lip.lipschitz_upper_bound():.6f}")


if __name__ == "__main__":
    main()
