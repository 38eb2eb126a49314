"""Start-up time of ``import dsnet_zoo`` and of ``dsnet-zoo`` commands against ``import torch``; prints a table.

    python benchmarks/bench_startup.py [--repeats 5]

Each command runs in a fresh interpreter ``--repeats`` times; the table gives the median wall time and its
ratio to the reference ``python -c "import torch"`` measured in the same run. Target: ``dsnet-zoo --help``
and ``dsnet-zoo list`` within 1.5x of the reference (timm and torchvision are not imported by commands that
do not need them; ``import dsnet_zoo; import timm`` still registers every architecture with timm, checked in
the last row).
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

REGISTERED = ("import dsnet_zoo, timm; n = len(timm.list_models('lipnet*')); "
              "assert n >= len(dsnet_zoo.list_models('lipnet*')) > 0, n")

COMMANDS = [
    ("python -c 'import torch' (reference)", [sys.executable, "-c", "import torch"]),
    ("python -c 'import dsnet_zoo'", [sys.executable, "-c", "import dsnet_zoo"]),
    ("dsnet-zoo --help", [sys.executable, "-m", "dsnet_zoo", "--help"]),
    ("dsnet-zoo list", [sys.executable, "-m", "dsnet_zoo", "list"]),
    ("import dsnet_zoo; import timm (registered)", [sys.executable, "-c", REGISTERED]),
]
TARGETS = {"dsnet-zoo --help": 1.5, "dsnet-zoo list": 1.5}


def _time(cmd: list[str]) -> float:
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    _time(COMMANDS[0][1])  # warm the file cache once, for every row alike
    # interleaved rounds, so that a load change on the machine hits every row alike
    times: dict[str, list[float]] = {name: [] for name, _ in COMMANDS}
    for _ in range(args.repeats):
        for name, cmd in COMMANDS:
            times[name].append(_time(cmd))
    ref = statistics.median(times[COMMANDS[0][0]])
    failed = False
    print(f"\n{args.repeats} runs each, median wall time; python {sys.version.split()[0]}\n")
    print("| command | median s | ratio to import torch | target |")
    print("|---|---|---|---|")
    for name, _ in COMMANDS:
        med = statistics.median(times[name])
        target = TARGETS.get(name)
        verdict = ""
        if target is not None:
            ok = med / ref <= target
            failed |= not ok
            verdict = f"<= {target}x {'PASS' if ok else 'FAIL'}"
        print(f"| {name} | {med:.2f} | {med / ref:.2f}x | {verdict} |")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
