"""Evaluate every matching pretrained model and rebuild the leaderboard, the plot and the model cards.

    python eval/leaderboard.py [--models 'lipnet*'] [--dataset cifar10-full] [--metrics clean,certified]
                               [--n N] [--device auto] [--batch-size B] [--seed S] [--report-only]

Writes one JSON per result to ``eval/results/``, named by everything that defines it:
``<arch.tag>__<dataset>__n<N>__w<weights sha256[:8]>__<metric+set>[__s<hash of non-default settings>].json``
(per-example outcomes beside it in ``*.examples.json``), so a run on fewer images, other weights or other
settings gets its own file and never replaces another; a result that already exists for the same key is
kept unless ``--force``, and an interrupted run resumes from its ``.partial/`` state. Then regenerates
``eval/LEADERBOARD.md``, ``eval/leaderboard.json`` (beside it), ``eval/accuracy_vs_eps.png`` and
``model_cards/<arch.tag>.md`` from all result files there, each number from the result with the largest
``n`` (then the newest).

Classifiers are evaluated on ``--dataset`` (those with another number of classes are skipped with a
message); regression models (``massnet_sir``) on their own test set (:mod:`dsnet_zoo.evaluation.regression`;
``--n`` counts its examples only when ``--dataset`` names it); other models are skipped with a message.
"""
from __future__ import annotations

import argparse
import fnmatch
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
                        "cifar10-real: its first 1,017, the paper's set; cifar100-full; see dsnet_zoo.data; "
                        "or a regression set: sir)")
    p.add_argument("--data-dir")
    p.add_argument("--n", type=int)
    p.add_argument("--metrics", default="clean,certified")
    p.add_argument("--eps")
    p.add_argument("--aa-threats")
    p.add_argument("--aa-channels-last", action="store_true",
                   help="AutoAttack with the model and inputs in the channels-last layout: speed only (the result "
                        "file is the same one; see eval/README.md)")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--results-dir", default=str(ROOT / "eval" / "results"))
    p.add_argument("--leaderboard", default=str(ROOT / "eval" / "LEADERBOARD.md"))
    p.add_argument("--leaderboard-json", help="machine-readable leaderboard (default: leaderboard.json beside "
                                              "--leaderboard)")
    p.add_argument("--plot", default=str(ROOT / "eval" / "accuracy_vs_eps.png"))
    p.add_argument("--cards-dir", default=str(ROOT / "model_cards"))
    p.add_argument("--force", action="store_true", help="re-evaluate even when the result file exists")
    p.add_argument("--report-only", action="store_true", help="only rebuild the leaderboard, plot and cards")
    p.add_argument("--no-progress", action="store_true")
    return p


def _settings(args, metrics: list[str], cert_eps, aa_threats) -> dict:
    """The run's settings that change its numbers and differ from the defaults (they key its file)."""
    from dsnet_zoo.evaluation import DEFAULT_CERT_EPS, format_eps
    from dsnet_zoo.evaluation.attacks import STANDARD_THREATS

    out = {}
    if "certified" in metrics and cert_eps is not None and tuple(cert_eps) != tuple(DEFAULT_CERT_EPS):
        out["cert_eps"] = [format_eps(e) for e in cert_eps]
    if "autoattack" in metrics and aa_threats is not None and tuple(aa_threats) != tuple(STANDARD_THREATS):
        out["aa_threats"] = [f"{n}:{format_eps(e)}" for n, e in aa_threats]
    if any(m in metrics for m in ("autoattack", "paper-pgd")):  # random attacks: seeds per batch
        if args.seed != 0:
            out["seed"] = args.seed
        if args.batch_size != 256:
            out["batch_size"] = args.batch_size
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import dsnet_zoo
    from dsnet_zoo.cli.eval_cmd import parse_threats
    from dsnet_zoo.data import DataError, list_datasets, load_dataset
    from dsnet_zoo.evaluation import CrossCheckError, evaluate, list_metrics, load_for_eval, parse_eps, result_stem
    from dsnet_zoo.evaluation.cards import write_model_cards
    from dsnet_zoo.evaluation.regression import (REGRESSION_SETS, evaluate_regression, is_regression_model,
                                                 load_regression_set)
    from dsnet_zoo.evaluation.report import (load_results, plot_accuracy_vs_eps, write_leaderboard,
                                             write_leaderboard_json)
    from dsnet_zoo.hub import WeightsError
    from dsnet_zoo.registry import get_pretrained_cfg

    results_dir = Path(args.results_dir)
    json_path = Path(args.leaderboard_json) if args.leaderboard_json else Path(args.leaderboard).with_name(
        "leaderboard.json")
    failed, errors = [], []
    if not args.report_only:
        metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
        bad = [m for m in metrics if m not in list_metrics()]
        if bad:
            print(f"unknown metric(s) {bad}; choose from {list_metrics()}", file=sys.stderr)
            return 2
        if args.dataset not in REGRESSION_SETS and args.dataset not in list_datasets():
            print(f"unknown dataset {args.dataset!r}; image sets: {', '.join(list_datasets())}; regression sets: "
                  f"{', '.join(sorted(REGRESSION_SETS))}", file=sys.stderr)
            return 2
        if args.n is not None and args.n <= 0:
            print(f"--n must be positive, got {args.n}", file=sys.stderr)
            return 2
        patterns = [p.strip() for p in args.models.split(",") if p.strip()]
        names = [n for n in dsnet_zoo.list_pretrained()
                 if any(fnmatch.fnmatchcase(n, p) or fnmatch.fnmatchcase(n.split(".")[0], p) for p in patterns)]
        if not names:
            print(f"no pretrained model matches {args.models!r}; see `dsnet-zoo list --pretrained`", file=sys.stderr)
            return 1
        cert_eps = [parse_eps(e) for e in args.eps.split(",")] if args.eps else None
        aa_threats = parse_threats(args.aa_threats) if args.aa_threats else None
        kw = {k: v for k, v in (("cert_eps", cert_eps), ("aa_threats", aa_threats)) if v is not None}
        if args.aa_channels_last:
            kw["aa_channels_last"] = True
        settings = _settings(args, ["clean", *metrics], cert_eps, aa_threats)
        cfgs = {name: get_pretrained_cfg(name, required=True) for name in names}
        data = None
        if args.dataset not in REGRESSION_SETS and any(c.num_classes for c in cfgs.values()):
            try:
                data = load_dataset(args.dataset, "test", data_dir=args.data_dir, n=args.n)
            except (DataError, ValueError) as e:
                print(f"cannot load {args.dataset}: {e}", file=sys.stderr)
                return 2
        for name, cfg in cfgs.items():
            # what to run: (dataset, n, metric set, settings), or a one-line reason to skip
            if is_regression_model(cfg):
                if args.dataset in REGRESSION_SETS and cfg.dataset != args.dataset:
                    print(f"{name}: skipped: a regression model of the {cfg.dataset!r} set, not {args.dataset!r}",
                          file=sys.stderr)
                    continue
                try:  # --n counts examples of the requested set only
                    n = len(load_regression_set(cfg.dataset, args.n if args.dataset == cfg.dataset else None))
                except ValueError as e:
                    print(f"{name}: FAILED: {e}", file=sys.stderr)
                    errors.append(name)
                    continue
                dataset, run_metrics, run_settings = cfg.dataset, ["conserved_sum_error", "mse"], None
            elif args.dataset in REGRESSION_SETS:
                print(f"{name}: skipped: not a regression model, and {args.dataset!r} is a regression set",
                      file=sys.stderr)
                continue
            elif not cfg.num_classes:
                print(f"{name}: skipped: neither a classifier nor a regression model with a known test set "
                      f"(num_classes={cfg.num_classes}, dataset={cfg.dataset!r})", file=sys.stderr)
                continue
            elif cfg.num_classes != data.num_classes:
                print(f"{name}: skipped: {cfg.num_classes} classes, {args.dataset} has {data.num_classes} "
                      f"(it was trained on {cfg.dataset!r})", file=sys.stderr)
                continue
            else:
                run_metrics = list(dict.fromkeys(["clean", *metrics]))
                dataset, n, run_settings = args.dataset, len(data), settings
            # the file is keyed by the weights' sha256: the registered one (checked when loading), else the file's
            def load():
                try:
                    return load_for_eval(name)
                except WeightsError as e:
                    print(f"{name}: FAILED to load its weights: {e}", file=sys.stderr)
                    errors.append(name)
                    return None, None

            model = ident = None
            sha = cfg.sha256
            if not sha:
                model, ident = load()
                if model is None:
                    continue
                sha = ident["weights_sha256"]
            out = results_dir / (result_stem(name, dataset, run_metrics, n=n, weights_sha256=sha,
                                             settings=run_settings) + ".json")
            if out.exists() and not args.force:
                print(f"{name}: kept {out.name} (use --force to redo)", file=sys.stderr)
                continue
            if model is None:
                model, ident = load()
                if model is None:
                    continue
            print(f"{name}: evaluating on {dataset}, n={n} ({', '.join(run_metrics)}) -> {out.name}", file=sys.stderr)
            try:
                if dataset in REGRESSION_SETS:
                    evaluate_regression(model, dataset, n=n, out=out, ident=ident)
                else:
                    evaluate(model, data, metrics=metrics, device=args.device, batch_size=args.batch_size,
                             seed=args.seed, out=out, progress=not args.no_progress, restart=args.force, ident=ident,
                             **kw)
            except CrossCheckError as e:
                print(f"{name}: CROSS-CHECK FAILED, no result written:\n{e}", file=sys.stderr)
                failed.append(name)
            except (ValueError, ImportError) as e:
                print(f"{name}: FAILED: {e}", file=sys.stderr)
                errors.append(name)
    results = load_results(results_dir) if results_dir.is_dir() else []
    write_leaderboard(results, args.leaderboard)
    write_leaderboard_json(results, json_path)
    plot = plot_accuracy_vs_eps(results, args.plot)
    cards = write_model_cards(results, args.cards_dir)
    print(f"{len(results)} result file(s) -> {args.leaderboard}, {json_path}" + (f", {plot}" if plot else "")
          + f", {len(cards)} model card(s) in {args.cards_dir}", file=sys.stderr)
    return 3 if failed else 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
