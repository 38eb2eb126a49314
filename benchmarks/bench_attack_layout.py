"""Should AutoAttack run in the channels-last layout? Forward and input-gradient passes per memory layout.

AutoAttack's cost is model passes: APGD-CE, APGD-T and FAB-T take input gradients, Square (5,000 queries
on every point still unbroken) only forward passes, and it dominates on nets that keep many points at a
radius. ``dsnet-zoo eval --aa-channels-last`` (``eval/leaderboard.py --aa-channels-last``) runs the
attacks with the model's 4-d weights and its inputs in the channels-last layout: the same function, its
sums in another order. This prints, per pretrained model, the median seconds of a forward pass and of a
forward + input-gradient pass on one batch in each layout (interleaved: contiguous, channels-last,
contiguous, ...; so a shared machine's load affects both alike), their ratio (contiguous / channels-last:
above 1, channels-last is faster), and the largest logit difference between the layouts. Run, e.g.:

    OMP_NUM_THREADS=1 DSNET_ZOO_WEIGHTS_DIR=/path/to/ported python benchmarks/bench_attack_layout.py \\
        --models vpnet_cifar10,hamnet_cifar100,lipnet_cifar10,lipnet_paper_ne_cifar10.margin_0_3
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch

import dsnet_zoo

CL = torch.channels_last


def _forward(model, x):
    with torch.no_grad():
        return model(x)


def _input_gradient(model, x):
    x = x.detach().clone().requires_grad_(True)
    logits = model(x)
    # a cross-entropy-like scalar, as in APGD-CE
    (logits.logsumexp(1) - logits[:, 0]).sum().backward()
    return x.grad


def _timed(fn, model, x, layout, reps):
    model.to(memory_format=layout)
    x = x.contiguous(memory_format=layout)
    fn(model, x)  # warm-up: oneDNN picks and caches its kernels per layout
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        fn(model, x)
        out.append(time.perf_counter() - t)
    model.to(memory_format=torch.contiguous_format)
    return out


def bench(name: str, batch: int, reps: int, seed: int = 0) -> dict:
    model = dsnet_zoo.create(name, pretrained=True).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    x = torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(seed))
    row = {"model": name}
    for what, fn in (("forward", _forward), ("forward+grad", _input_gradient)):
        a, b = [], []
        for _ in range(reps):  # interleaved, one repetition of each at a time
            a += _timed(fn, model, x, torch.contiguous_format, 1)
            b += _timed(fn, model, x, CL, 1)
        row[what] = (statistics.median(a), statistics.median(b))
    z0 = _forward(model, x)
    model.to(memory_format=CL)
    z1 = _forward(model, x.contiguous(memory_format=CL))
    model.to(memory_format=torch.contiguous_format)
    row["max_logit_diff"] = float((z0 - z1).abs().max())
    row["argmax_agree"] = float((z0.argmax(1) == z1.argmax(1)).float().mean())
    return row


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", default="vpnet_cifar10,hamnet_cifar10,hamnet_cifar100,lipnet_cifar10,lipnet_cifar100",
                   help="comma-separated pretrained names, arch or arch.tag (ports need DSNET_ZOO_WEIGHTS_DIR)")
    p.add_argument("--batch", type=int, default=156, help="images per pass (Square's batch: the unbroken points)")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = p.parse_args(argv)
    if args.batch < 1 or args.reps < 1:
        p.error(f"--batch and --reps must be at least 1, got {args.batch} and {args.reps}")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {torch.get_num_threads()} "
          f"thread(s), batch {args.batch}, median of {args.reps} interleaved repetitions\n")
    print("| model | forward contiguous | forward channels-last | ratio | fwd+grad contiguous | "
          "fwd+grad channels-last | ratio | max logit diff | argmax agree |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name in [m.strip() for m in args.models.split(",") if m.strip()]:
        r = bench(name, args.batch, args.reps)
        (fa, fb), (ga, gb) = r["forward"], r["forward+grad"]
        print(f"| {name} | {fa:.3f} s | {fb:.3f} s | {fa / fb:.2f}x | {ga:.3f} s | {gb:.3f} s | {ga / gb:.2f}x | "
              f"{r['max_logit_diff']:.1e} | {100 * r['argmax_agree']:.1f} % |", flush=True)


if __name__ == "__main__":
    main()
