"""First-load (WebP decode) and cached-load times of the full CIFAR packs.

    DSNET_ZOO_DATA=../shared/data python benchmarks/bench_data.py [--cache DIR] [--json]

For each of ``cifar10-full`` and ``cifar100-full``: the first load of the test split into an empty cache
folder (a temp folder unless ``--cache``; this decodes all ~60,000 images of the pack and writes the cache),
then a cached load of the test split and of the train split. Times are wall seconds of ``load_dataset``,
which includes the md5 check of the pack, the cache's sha256 check and the NHWC -> NCHW copy.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", help="folder with the packs (default $DSNET_ZOO_DATA)")
    ap.add_argument("--cache", help="cache folder to use (default: a new temp folder, so the first load decodes)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["DSNET_ZOO_CACHE"] = args.cache or tmp
        from dsnet_zoo.data import load_dataset

        out = {}
        for name in ("cifar10-full", "cifar100-full"):
            t0 = time.perf_counter()
            load_dataset(name, "test", data_dir=args.data_dir)
            t1 = time.perf_counter()
            load_dataset(name, "test", data_dir=args.data_dir)
            t2 = time.perf_counter()
            load_dataset(name, "train", data_dir=args.data_dir)
            t3 = time.perf_counter()
            out[name] = {"first_load_s": round(t1 - t0, 2), "cached_test_s": round(t2 - t1, 2),
                         "cached_train_s": round(t3 - t2, 2)}
    if args.json:
        print(json.dumps(out))
    else:
        for name, t in out.items():
            print(f"{name}: first load (decode + cache) {t['first_load_s']:.2f} s, cached test "
                  f"{t['cached_test_s']:.2f} s, cached train {t['cached_train_s']:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
