"""Evaluate every matching pretrained model and rebuild the leaderboard, the plot and the model cards.

    python eval/leaderboard.py [--models 'lipnet*'] [--dataset cifar10-full] [--metrics clean,certified]
                               [--n N] [--device auto] [--batch-size B] [--seed S] [--report-only]

Writes one JSON per (model tag, dataset, metric set) to ``eval/results/`` (per-example outcomes beside
it in ``*.examples.json``), then regenerates ``eval/LEADERBOARD.md``, ``eval/accuracy_vs_eps.png`` and
``model_cards/<arch.tag>.md`` from all result files there. A result that already exists for the same
configuration is kept unless ``--force``; an interrupted run resumes from its ``.partial/`` state.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="*", help="shell pattern(s) over arch.tag, comma-separated (default: all)")
    p.add_argument("--dataset", default="cifar10-full",
                   help="dataset name (default cifar10-full: the real CIFAR-10 test set, 9,977 of 10,000 images; "
                        "cifar10-real: its first 1,017, the paper's set; cifar100-full; see dsnet_zoo.data)")
    p.add_argument("--data-dir")
    p.add_argument("--n", type=int)
    p.add_argument("--metrics", default="clean,certified")
    p.add_argument("--eps")
    p.add_argument("--aa-threats")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--results-dir", default=str(ROOT / "eval" / "results"))
    p.add_argument("--leaderboard", default=str(ROOT / "eval" / "LEADERBOARD.md"))
    p.add_argument("--plot", default=str(ROOT / "eval" / "accuracy_vs_eps.png"))
    p.add_argument("--cards-dir", default=str(ROOT / "model_cards"))
    p.add_argument("--force", action="store_true", help="re-evaluate even when the result file exists")
    p.add_argument("--report-only", action="store_true", help="only rebuild the leaderboard, plot and cards")
    p.add_argument("--no-progress", action="store_true")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import dsnet_zoo
    from dsnet_zoo.cli.eval_cmd import parse_threats
    from dsnet_zoo.evaluation import CrossCheckError, evaluate, list_metrics, parse_eps, result_stem
    from dsnet_zoo.evaluation.cards import write_model_cards
    from dsnet_zoo.evaluation.report import load_results, plot_accuracy_vs_eps, write_leaderboard

    results_dir = Path(args.results_dir)
    failed = []
    if not args.report_only:
        metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
        bad = [m for m in metrics if m not in list_metrics()]
        if bad:
            print(f"unknown metric(s) {bad}; choose from {list_metrics()}", file=sys.stderr)
            return 2
        patterns = [p.strip() for p in args.models.split(",") if p.strip()]
        names = [n for n in dsnet_zoo.list_pretrained()
                 if any(fnmatch.fnmatchcase(n, p) or fnmatch.fnmatchcase(n.split(".")[0], p) for p in patterns)]
        if not names:
            print(f"no pretrained model matches {args.models!r}; see `dsnet-zoo list --pretrained`", file=sys.stderr)
            return 1
        kw = {}
        if args.eps:
            kw["cert_eps"] = [parse_eps(e) for e in args.eps.split(",")]
        if args.aa_threats:
            kw["aa_threats"] = parse_threats(args.aa_threats)
        for name in names:
            out = results_dir / f"{result_stem(name, args.dataset, ['clean', *metrics])}.json"
            if out.exists() and not args.force:
                old = json.loads(out.read_text())
                if args.n is None or old["dataset"]["n"] == args.n:
                    print(f"{name}: kept {out.name} (use --force to redo)", file=sys.stderr)
                    continue
            print(f"{name}: evaluating on {args.dataset} ({', '.join(metrics)})", file=sys.stderr)
            try:
                evaluate(name, args.dataset, data_dir=args.data_dir, n=args.n, metrics=metrics,
                         device=args.device, batch_size=args.batch_size, seed=args.seed, out=out,
                         progress=not args.no_progress, restart=args.force, **kw)
            except CrossCheckError as e:
                print(f"{name}: CROSS-CHECK FAILED, no result written:\n{e}", file=sys.stderr)
                failed.append(name)
    results = load_results(results_dir) if results_dir.is_dir() else []
    write_leaderboard(results, args.leaderboard)
    plot = plot_accuracy_vs_eps(results, args.plot)
    cards = write_model_cards(results, args.cards_dir)
    print(f"{len(results)} result file(s) -> {args.leaderboard}" + (f", {plot}" if plot else "")
          + f", {len(cards)} model card(s) in {args.cards_dir}", file=sys.stderr)
    return 3 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
