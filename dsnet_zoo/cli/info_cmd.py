"""``dsnet-zoo info NAME [--json]``"""
from __future__ import annotations

import json


def add_parser(sub) -> None:
    p = sub.add_parser("info", help="show a model's family, size and pretrained tags")
    p.add_argument("name", help="arch or arch.tag")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from .. import model_info

    info = model_info(args.name)
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True, default=str))
        return 0
    print(f"{info['name']}  ({info['family']}, dataset {info['dataset']})")
    if info.get("description"):
        print(f"  {info['description']}")
    print(f"  parameters: {info['num_params']:,}   classes: {info['num_classes']}   "
          f"certified Lipschitz bound: {'yes' if info['certified'] else 'no'}")
    if not info["pretrained"]:
        print("  pretrained tags: none")
    for tag, cfg in info["pretrained"].items():
        default = " (default)" if tag == info["default_tag"] else ""
        print(f"  {info['name']}.{tag}{default}")
        print(f"    hub: {cfg['hf_hub_id']}@{cfg['revision']}  sha256: {cfg['sha256']}")
        print(f"    dataset: {cfg['dataset']}  license: {cfg['license']}  source: {cfg['source']}")
        for k, v in (cfg.get("metrics") or {}).items():
            print(f"    {k}: {v}")
    return 0
