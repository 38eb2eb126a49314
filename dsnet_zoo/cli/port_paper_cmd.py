"""``dsnet-zoo port-paper --src DIR --out DIR [--only PATTERN ...]``"""
from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser(
        "port-paper",
        help="convert the paper authors' released CIFAR-10 checkpoints into Hub-ready repo folders",
        description="Reads the released .pt files (DIR or DIR/cifar10), checks their sha256, loads them "
                    "strictly into dsnet_zoo's port and writes OUT/<org>/<name>/{model.safetensors, "
                    "config.json, README.md}. Point DSNET_ZOO_WEIGHTS_DIR at OUT to load them with "
                    "create(NAME, pretrained=True). The authors' repository has no license: keep OUT local.")
    p.add_argument("--src", default=None, help="folder with the released checkpoints "
                                               "(default: $DSNET_ZOO_PAPER_WEIGHTS)")
    p.add_argument("--out", required=True, help="output folder (git-ignored, e.g. ported/)")
    p.add_argument("--only", nargs="*", default=[], metavar="PATTERN",
                   help="shell patterns on arch.tag, e.g. 'lipnet_paper_ne_*'")
    p.add_argument("--no-check", action="store_true",
                   help="do not fail when a converted file's sha256 differs from the registered one")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..paper_port import port_paper

    results = port_paper(args.src, args.out, filter=args.only, check_registered=not args.no_check)
    for r in results:
        flag = "ok" if r["matches_registry"] else "DIFFERS FROM REGISTRY"
        print(f"{r['name']:50s} {r['sha256']}  {flag}\n    -> {r['path']}")
    return 0
