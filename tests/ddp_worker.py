"""Run by tests/test_train_ddp.py under ``python -m torch.distributed.run --nproc_per_node=2``:
trains the tiny recipe with DDP (gloo, CPU) and saves this rank's final weights."""
from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import train_helpers as th  # noqa: E402

from dsnet_zoo.training import train  # noqa: E402


def main() -> None:
    th.register()
    out = Path(sys.argv[1])
    recipe = th.Recipe.from_json(sys.argv[2])
    res = train(recipe, out / "run", device="cpu", progress=False, plot=False)
    rank = int(os.environ["RANK"])
    torch.save(res.state, out / f"rank{rank}.pt")
    if rank == 0:
        (out / "history.json").write_text(json.dumps(res.history))


if __name__ == "__main__":
    main()
