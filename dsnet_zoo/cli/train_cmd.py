"""``dsnet-zoo train NAME[.TAG] --out DIR [--dataset D] [--epochs N] [--batch-size B] [--lr LR]
[--init-from NAME.TAG] [--device auto|cpu|cuda] [--data-dir DIR] [--resume] [--recipe FILE.json]``

``NAME.TAG`` reruns the recipe recorded with that tag's weights, exactly (no hyper-parameter
options are accepted with it). ``NAME`` trains the family's default recipe with the options given.
Under ``torchrun --nproc_per_node=R -m dsnet_zoo train ...`` it trains with DDP.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ..utils import remembered_interrupts

HYPER = ("dataset", "eval_dataset", "epochs", "batch_size", "lr", "seed", "tag", "train_limit", "eval_limit",
         "init_from")


EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a model from a recipe; output is a Hub-ready repo folder")
    p.add_argument("name", help="ARCH (the family's default recipe) or ARCH.TAG (rerun that tag's recipe)")
    p.add_argument("--out", required=True, help="output folder: checkpoint.pt, log.jsonl, curves.png, hub/")
    p.add_argument("--dataset", help="training set (default: the family's, cifar10-full or cifar100-full for "
                                     "CIFAR models; e.g. cifar10-full, cifar100-full, cifar10, sir)")
    p.add_argument("--eval-dataset", help="set whose metrics are recorded (default: the training set's test "
                                          "split; e.g. cifar10-full, cifar10-real)")
    p.add_argument("--train-limit", type=int, help="train on the first N examples only (short runs)")
    p.add_argument("--eval-limit", type=int, help="evaluate on the first N examples only")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, help="global batch size (split over DDP processes)")
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--seed", type=int, help="seed of the initialisation and augmentation")
    p.add_argument("--tag", help="tag of the weights written to OUT/hub (default 'custom')")
    p.add_argument("--init-from", metavar="ARCH.TAG",
                   help="start from these registered pretrained weights of the same architecture (hash-checked) "
                        "instead of the seeded initialisation: a warm restart with a fresh optimizer and schedule")
    p.add_argument("--repo-id", help="ORG/NAME recorded as the weights' Hub repo (default dsnet-zoo/ARCH-TAG)")
    p.add_argument("--recipe", help="JSON file with a full recipe (see --print-recipe)")
    p.add_argument("--data-dir", help="dataset root (default $DSNET_ZOO_DATA, else the user cache)")
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--no-plot", action="store_true", help="do not write curves.png (no matplotlib needed)")
    p.add_argument("--print-recipe", action="store_true", help="print the recipe as JSON and exit")
    p.set_defaults(func=run)


def resolve_recipe(args):
    """``(recipe, base_cfg, hub_repo_id)`` from the command line."""
    from ..registry import get_pretrained_cfg, split_model_name
    from ..training import Recipe, default_recipe

    arch, tag = split_model_name(args.name)
    overrides = {k: getattr(args, k) for k in HYPER if getattr(args, k) is not None}
    if tag:
        if overrides or args.recipe:
            raise ValueError(
                f"{args.name} reruns the recipe recorded with that tag exactly; options "
                f"{', '.join('--' + k.replace('_', '-') for k in overrides) or '--recipe'} would change it. "
                f"Train {arch} (no tag) with the options instead, or edit the recipe: "
                f"dsnet-zoo train {args.name} --out X --print-recipe > r.json; dsnet-zoo train {arch} --recipe r.json ...")
        cfg = get_pretrained_cfg(args.name, retired=True)  # a retired tag retrains like any other
        if not cfg.recipe:
            raise ValueError(f"{args.name} has no recorded recipe (weights of source {cfg.source!r}); "
                             f"train {arch} with the family's default recipe instead")
        recipe = Recipe.from_dict(cfg.recipe)
        if recipe.model != arch:
            raise ValueError(f"the recipe recorded with {args.name} trains {recipe.model}, not {arch}")
        return recipe, cfg, cfg.hf_hub_id
    if args.recipe:
        try:
            recipe = Recipe.from_json(Path(args.recipe).read_text())
        except OSError as e:
            raise ValueError(f"cannot read recipe file {args.recipe}: {e}") from e
        if recipe.model != arch:
            raise ValueError(f"{args.recipe} trains {recipe.model}, but the command names {arch}")
        return (recipe.replace(**overrides) if overrides else recipe), None, None
    return default_recipe(arch, **overrides), None, None


def run(args) -> int:
    from ..training import train

    recipe, cfg, repo_id = resolve_recipe(args)
    if args.print_recipe:
        print(recipe.to_json())
        return 0
    try:
        with remembered_interrupts():
            result = train(recipe, args.out, data_dir=args.data_dir, device=args.device, resume=args.resume,
                           progress=not args.no_progress, plot=not args.no_plot, base_cfg=cfg,
                           hub_repo_id=args.repo_id or repo_id)
    except KeyboardInterrupt:
        # the checkpoint is rewritten atomically after each epoch, so the one on disk is whole
        ckpt = Path(args.out) / "checkpoint.pt"
        where = (f"{ckpt} holds the last finished epoch" if ckpt.is_file()
                 else "no epoch had finished, so there is no checkpoint yet")
        print(f"\ndsnet-zoo train: interrupted; {where}. Rerun the same command with --resume to continue.",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    if result.hub is not None:
        print(f"trained {recipe.model}.{recipe.tag}: {json.dumps(result.metrics, sort_keys=True)}")
        print(f"wrote {result.hub['path']} (model.safetensors sha256 {result.hub['sha256']}), "
              f"log {Path(args.out) / 'log.jsonl'}")
    return 0
