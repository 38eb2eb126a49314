"""torchrun: 2 CPU processes (gloo) shard the batches and merge to exactly the single-process result."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

WORKER = textwrap.dedent("""
    import sys
    import torch
    from dsnet_zoo.evaluation import evaluate
    from dsnet_zoo.evaluation.reference import LinearReference, nearest_prototype_weights, prototype_data

    data, protos = prototype_data(10, seed=7)
    m = LinearReference()
    m.load_state_dict(nearest_prototype_weights(protos))
    evaluate(m, data, metrics=["clean", "certified", "autoattack"], aa_threats=[("L2", 0.5), ("Linf", 8 / 255)],
             batch_size=3, seed=11, device="cpu", out=sys.argv[1], progress=False,
             ident={"name": "linear-reference", "model": "LinearReference", "tag": None, "checkpoint": None})
""")


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    return env


def _without_timings(metrics: dict) -> dict:
    """The metrics minus the measured seconds (AutoAttack's cost record), which no two runs share."""
    out = json.loads(json.dumps(metrics))
    for cost in (out.get("autoattack") or {}).get("cost", {}).values():
        for k in [k for k in cost if "seconds" in k]:
            del cost[k]
    return out


def test_torchrun_two_processes_equal_single_process(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    single, multi = tmp_path / "single.json", tmp_path / "multi.json"
    subprocess.run([sys.executable, str(script), str(single)], check=True, env=_env(), cwd=tmp_path, timeout=300)
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           str(script), str(multi)], env=_env(), cwd=tmp_path, timeout=300,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = json.loads(single.read_text()), json.loads(multi.read_text())
    assert a["run"]["world_size"] == 1 and b["run"]["world_size"] == 2
    assert _without_timings(a["metrics"]) == _without_timings(b["metrics"])
    assert a["cross_checks"] == b["cross_checks"]
    ea = json.loads((tmp_path / "single.examples.json").read_text())
    eb = json.loads((tmp_path / "multi.examples.json").read_text())
    assert ea == eb  # every per-example outcome, radii bit for bit
    assert len(ea["clean/pred"]) == 10
    assert not (tmp_path / "multi.json.partial").exists()
