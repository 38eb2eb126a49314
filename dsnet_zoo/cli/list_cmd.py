"""``dsnet-zoo list [PATTERN] [--pretrained]``"""
from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("list", help="list registered models (shell wildcards)")
    p.add_argument("pattern", nargs="?", default="", help="e.g. 'lipnet*'")
    p.add_argument("--pretrained", action="store_true", help="list arch.tag names that have weights")
    p.set_defaults(func=run)


def run(args) -> int:
    from .. import list_models

    names = list_models(args.pattern, pretrained=args.pretrained)
    for n in names:
        print(n)
    return 0 if names else 1
