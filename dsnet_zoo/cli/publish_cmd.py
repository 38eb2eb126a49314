"""``dsnet-zoo publish --model NAME.TAG --weights FILE --out DIR``"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path


def add_parser(sub) -> None:
    p = sub.add_parser("publish", help="write a Hub-ready repo folder (safetensors, config.json, model card)")
    p.add_argument("--model", required=True, help="ARCH.TAG: a registered tag, or a new tag for these weights")
    p.add_argument("--weights", required=True, help=".safetensors (or .pt/.pth, read weights-only) state dict")
    p.add_argument("--out", required=True, help="the repo folder to write (e.g. ROOT/ORG/NAME for serve-hub)")
    p.add_argument("--repo-id", help="ORG/NAME on the Hub (default: the registered one, else dsnet-zoo/ARCH-TAG)")
    p.add_argument("--dataset", help="training dataset (new tags)")
    p.add_argument("--license", help="license of the weights (new tags)")
    p.add_argument("--description", help="one paragraph for the model card")
    p.add_argument("--recipe", help="JSON file with the training recipe (new tags)")
    p.add_argument("--metrics", help="JSON file with measured metrics")
    p.add_argument("--overwrite", action="store_true", help="replace the files of an existing repo folder")
    p.set_defaults(func=run)


def _read_json(path: str | None):
    if not path:
        return None
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"cannot read JSON file {path}: {e}") from e


def run(args) -> int:
    from .. import create
    from ..hub import WeightsCfg, load_into_model, load_state_dict_file, write_hub_repo
    from ..registry import arch_info, get_pretrained_cfgs, split_model_name

    arch, tag = split_model_name(args.model)
    if not tag:
        raise ValueError(f"--model needs ARCH.TAG (got {args.model!r}): the tag names this set of weights")
    info = arch_info(arch)
    known = get_pretrained_cfgs(arch)
    if tag in known:
        cfg = known[tag]
    else:
        cfg = WeightsCfg(tag=tag, architecture=arch, hf_hub_id=f"dsnet-zoo/{arch}-{tag}",
                         dataset=info.get("dataset"))
    updates = {k: v for k, v in {
        "hf_hub_id": args.repo_id, "dataset": args.dataset, "license": args.license,
        "description": args.description, "recipe": _read_json(args.recipe),
        "metrics": _read_json(args.metrics)}.items() if v is not None}
    cfg = replace(cfg, architecture=arch, **updates)
    model = create(arch, pretrained=False, num_classes=cfg.num_classes, **dict(cfg.model_args))
    load_into_model(model, load_state_dict_file(args.weights), what=args.weights)
    result = write_hub_repo(model, cfg, args.out, overwrite=args.overwrite)
    out_cfg = result["cfg"]
    print(f"wrote {result['path']}: model.safetensors (sha256 {result['sha256']}), config.json, README.md")
    print("register these weights with:")
    print(f"  dsnet_zoo.register_pretrained({arch!r}, dsnet_zoo.WeightsCfg(tag={tag!r}, "
          f"hf_hub_id={out_cfg.hf_hub_id!r}, revision=<commit on the Hub>, sha256={out_cfg.sha256!r}, "
          f"num_classes={out_cfg.num_classes}, ...))")
    return 0
