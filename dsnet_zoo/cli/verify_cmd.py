"""``dsnet-zoo verify NAME[.TAG] [--pretrained] [--json]``: measure a model's structural claims.

Exit code 0 when every claim that applies holds within tolerance, 1 when one is violated
(2 for bad input, as for every subcommand).
"""
from __future__ import annotations

import json


def add_parser(sub) -> None:
    p = sub.add_parser("verify", help="measure a model's claims (Lipschitz bound, symplecticity, volume, "
                                      "inverse, conserved sum) in float64; exit 1 if one fails")
    p.add_argument("name", help="arch or arch.tag")
    p.add_argument("--pretrained", action="store_true",
                   help="load the tag's weights (default: random weights with the tag's model arguments)")
    p.add_argument("--checkpoint", default=None, help="verify the weights in this safetensors file instead")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--spatial", type=int, default=4,
                   help="side of the random inputs to conv blocks (full Jacobians cost (C*S*S)^3; default 4)")
    p.add_argument("--pairs", type=int, default=8, help="pairs of images in the Lipschitz gradient ascent")
    p.add_argument("--steps", type=int, default=100, help="gradient-ascent steps for the Lipschitz ratio")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--images", type=int, default=0, metavar="N",
                   help="invertible models: reconstruct the first N real test images of --dataset (default: 4 "
                        "random images)")
    p.add_argument("--dataset", default=None,
                   help="the set of --images (default: the weights' dataset, else the model's CIFAR set)")
    p.add_argument("--data-dir", default=None, help="where the datasets are (default: $DSNET_ZOO_DATA)")
    p.set_defaults(func=run)


def _fmt(v) -> str:
    if v is None:
        return "n/a"
    return f"{v:.3e}" if isinstance(v, float) else str(v)


def _image_set(model, dataset: str | None) -> str:
    if dataset:
        return dataset
    cfg = getattr(model, "pretrained_cfg", None) or {}
    if cfg.get("dataset"):
        return cfg["dataset"]
    return "cifar100-full" if cfg.get("num_classes") == 100 else "cifar10-full"


def run(args) -> int:
    from .. import create
    from ..data import load_dataset
    from ..verify import verify_model

    if args.spatial < 1 or args.pairs < 1 or args.steps < 1 or args.images < 0:
        raise ValueError("--spatial, --pairs and --steps must be positive integers, --images >= 0")
    model = create(args.name, pretrained=args.pretrained, checkpoint_path=args.checkpoint)
    images, label = None, ""
    if args.images:
        if not hasattr(model, "inverse"):
            raise ValueError(f"--images: {args.name} has no inverse(); only invertible models reconstruct images")
        data = load_dataset(_image_set(model, args.dataset), "test", data_dir=args.data_dir, n=args.images)
        images, _ = data.float_batch(0, len(data))
        label = data.info["description"]
    report = verify_model(model, args.name, spatial=args.spatial, seed=args.seed, pairs=args.pairs,
                          steps=args.steps, images=images, images_label=label)
    weights = "pretrained weights" if args.pretrained else (args.checkpoint or "random weights")
    report.settings["weights"] = weights
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, sort_keys=True))
    else:
        print(f"verify {args.name} ({weights}; float64, conv blocks at {args.spatial}x{args.spatial})")
        print(f"  {'claim':<48} {'value':>10}  {'tolerance':>10}  status")
        for c in report.claims.values():
            if not c.applies:
                print(f"  {c.label:<48} {'n/a':>10}  {'':>10}  n/a")
                continue
            status = {True: "ok", False: "FAILED", None: "(reported)"}[c.passed]
            detail = f"  [{c.detail}]" if c.detail else ""
            print(f"  {c.label:<48} {_fmt(c.value):>10}  {_fmt(c.tolerance):>10}  {status}{detail}")
        print("RESULT: " + ("PASS" if report.passed else
                            "FAIL (" + ", ".join(c.claim for c in report.failures()) + ")"))
    return 0 if report.passed else 1
