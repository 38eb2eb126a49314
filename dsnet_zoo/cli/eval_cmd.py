"""``dsnet-zoo eval NAME[.TAG]|CHECKPOINT --dataset D [--n N] [--metrics ...] [--out FILE.json]``

Shard over processes with ``torchrun --nproc_per_node=N -m dsnet_zoo eval ...``; rerunning an interrupted
command resumes from its per-batch state (``FILE.json.partial/``).
"""
from __future__ import annotations

import json
import os
import sys

from ..utils import remembered_interrupts

EXIT_CROSS_CHECK = 3
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def add_parser(sub) -> None:
    from ..data import list_datasets

    p = sub.add_parser("eval", help="evaluate a model: clean, certified, AutoAttack, the paper's PGD",
                       description="Evaluate NAME[.TAG] (pretrained weights) or a checkpoint file (with --arch, or a "
                                   "config.json beside it). Writes a JSON result and a per-example side file.")
    p.add_argument("name", help="arch[.tag] with registered weights, or a checkpoint path")
    p.add_argument("--arch", help="architecture of a checkpoint file")
    p.add_argument("--dataset", required=True, choices=list_datasets(),
                   help="cifar10-full: real CIFAR-10 test, 9,977 of 10,000 images; cifar100-full: real CIFAR-100 "
                        "test, all 10,000; cifar10-real: the first 1,017 CIFAR-10 test images (the paper's set); "
                        "cifar100-real; cifar10/cifar100: torchvision's official files")
    p.add_argument("--split", default="test", choices=["test", "train"])
    p.add_argument("--data-dir", help="folder with the data (default: $DSNET_ZOO_DATA, else the cache folder)")
    p.add_argument("--n", type=int, help="the first N examples in the set's order (default: all); the result "
                                          "names the exact set")
    p.add_argument("--metrics", default="clean,certified",
                   help="comma-separated: clean, certified, autoattack, paper-pgd (default: clean,certified)")
    p.add_argument("--eps", help="L2 radii of the certified metric, e.g. 36/255,72/255 (default: 36,72,108,255 /255)")
    p.add_argument("--paper-eps", help="L2 radii of paper-pgd (default: the paper's grid 8/255 .. 1.0)")
    p.add_argument("--aa-threats", help="AutoAttack threat models NORM:EPS,... (default: L2:0.5,L2:36/255,Linf:8/255)")
    p.add_argument("--aa-full", action="store_true",
                   help="AutoAttack every correct point; by default models with a provable bound are attacked "
                        "certificate-aware (certified points skipped, a seeded sample of them attacked as a check)")
    p.add_argument("--aa-cert-sample", type=int, default=32,
                   help="certified points attacked per threat as the cross-check (default 32)")
    p.add_argument("--aa-channels-last", action="store_true",
                   help="run the attacks with the model and inputs in the channels-last memory layout: faster "
                        "on CPU for most conv nets (see eval/README.md), same numbers up to float32 rounding")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:K (default: auto)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="result JSON (default: print the summary only; state kept in the cache folder)")
    p.add_argument("--restart", action="store_true", help="discard the saved partial state and start over")
    p.add_argument("--max-batches", type=int,
                   help="compute at most this many batches now, then exit 0 leaving resumable state")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def parse_threats(text: str) -> list[tuple[str, float]]:
    from ..evaluation import parse_eps

    out = []
    for item in _csv(text):
        norm, _, eps = item.partition(":")
        if norm not in ("L2", "Linf") or not eps:
            raise ValueError(f"threat {item!r}: write NORM:EPS with NORM L2 or Linf, e.g. Linf:8/255")
        out.append((norm, parse_eps(eps)))
    return out


def run(args) -> int:
    from ..evaluation import CrossCheckError, evaluate, list_metrics, parse_eps

    metrics = _csv(args.metrics)
    unknown = [m for m in metrics if m not in list_metrics()]
    if unknown:
        raise ValueError(f"unknown metric(s) {', '.join(unknown)}; choose from {', '.join(list_metrics())}")
    kw = {}
    if args.eps:
        kw["cert_eps"] = [parse_eps(e) for e in _csv(args.eps)]
    if args.paper_eps:
        kw["paper_eps"] = [parse_eps(e) for e in _csv(args.paper_eps)]
    if args.aa_threats:
        kw["aa_threats"] = parse_threats(args.aa_threats)
    try:
        with remembered_interrupts():
            result = evaluate(args.name, args.dataset, split=args.split, data_dir=args.data_dir, n=args.n,
                              metrics=metrics, device=args.device, batch_size=args.batch_size, seed=args.seed,
                              out=args.out, restart=args.restart, max_batches=args.max_batches,
                              progress=not args.no_progress, arch=args.arch,
                              aa_mode="full" if args.aa_full else "auto", aa_cert_sample=args.aa_cert_sample,
                              aa_channels_last=args.aa_channels_last,
                              **kw)
    except CrossCheckError as e:
        print(f"dsnet-zoo eval: CROSS-CHECK FAILED, no result written:\n{e}", file=sys.stderr)
        return EXIT_CROSS_CHECK
    except KeyboardInterrupt:
        # every finished batch is already saved (atomically) in the state folder
        state = f"{args.out}.partial/" if args.out else "the cache folder"
        print(f"\ndsnet-zoo eval: interrupted; the finished batches are kept in {state}. Rerun the same "
              "command to continue from them (--restart starts over).", file=sys.stderr)
        return EXIT_INTERRUPTED
    if result is None:
        print("dsnet-zoo eval: stopped early (--max-batches); run the same command again to resume",
              file=sys.stderr)
        return 0
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    result.pop("_examples", None)
    summary = {"name": result["name"], "dataset": result["dataset"]["name"], "n": result["dataset"]["n"],
               "set": result["dataset"].get("description"),
               "lipschitz_bound": result["lipschitz"]["bound"],
               "metrics": {k: v.get("accuracy") for k, v in result["metrics"].items()},
               "wall_time_s": result["run"]["wall_time_s"], "out": args.out}
    print(json.dumps(summary, indent=1))
    return 0
