"""``evaluate``: one model on one dataset, batch by batch, resumable, shardable with ``torchrun``.

- Examples are cut into fixed batches of ``batch_size`` in dataset order; batch ``b`` always holds the
  same examples and uses the seed ``seed * 1_000_003 + b``, so its outcomes do not depend on how many
  processes run or whether the run was interrupted. Under ``torchrun`` (``WORLD_SIZE > 1``) process
  ``r`` runs the batches ``b = r (mod world)``; the outcomes are merged with ``all_gather_object``.
- Each finished batch is saved (atomically) in a state folder next to the output, ``<out>.partial/``;
  a later run with the same configuration skips the batches already there.
- Before anything is written, the merged outcomes are cross-checked (:func:`cross_check`); a
  contradiction raises :class:`CrossCheckError` and no result file is produced.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import shlex
import shutil
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from tqdm.auto import tqdm

from .. import distributed
from .._api import create
from .._version import __version__
from ..data import EvalData, load_dataset
from ..hub import read_hub_folder
from ..registry import get_pretrained_cfg, split_model_name
from ..utils import atomic_write_text, raise_if_interrupted, resolve_device
from .attacks import STANDARD_THREATS
from .certify import Certifier
from .metrics import (DEFAULT_CERT_EPS, DEFAULT_METRICS, PAPER_EPS, Batch, Column, CrossCheckError, MetricContext,
                      format_eps, get_metric)

__all__ = ["evaluate", "load_for_eval", "cross_check", "CrossCheckError", "atomic_write_text",
           "atomic_write_json", "result_stem", "SCHEMA"]

SCHEMA = "dsnet_zoo.eval/1"


# ------------------------------------------------------------------------------------------------
# files


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(_jsonable(obj), indent=1, allow_nan=False) + "\n")


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [_jsonable(v) for v in obj.tolist()]
    if isinstance(obj, (np.bool_,)):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        v = float(obj)
        return None if math.isnan(v) else (v if math.isfinite(v) else ("inf" if v > 0 else "-inf"))
    return obj


def result_stem(name: str, dataset: str, metrics: Sequence[str], *, n: int | None = None,
                weights_sha256: str | None = None, split: str = "test", settings: dict[str, Any] | None = None) -> str:
    """File stem of a result, from everything that defines it:
    ``<arch.tag>__<dataset>[.<split>]__n<n>__w<sha256[:8]>__<metric-set>[__s<hash>]``.

    The split appears when it is not ``test``; ``settings`` (the non-default settings that change
    the numbers: radii, threats, seed, ...) add a short hash of themselves. Without ``n`` and
    ``weights_sha256`` the stem is ``<arch.tag>__<dataset>__<metric-set>`` (only for names that
    need no uniqueness, such as a cache folder that carries its own fingerprint)."""
    if n is not None and n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    parts = [name, dataset if split == "test" else f"{dataset}.{split}"]
    if n is not None:
        parts.append(f"n{int(n)}")
    if weights_sha256 is not None:
        if len(weights_sha256) < 8 or any(c not in "0123456789abcdef" for c in weights_sha256.lower()):
            raise ValueError(f"weights_sha256 must be a hex digest, got {weights_sha256!r}")
        parts.append(f"w{weights_sha256.lower()[:8]}")
    parts.append("+".join(sorted(set(metrics))))
    if settings:
        digest = hashlib.sha256(json.dumps(_jsonable(settings), sort_keys=True).encode()).hexdigest()[:8]
        parts.append(f"s{digest}")
    return "__".join(parts)


# ------------------------------------------------------------------------------------------------
# models


def _parameters_sha256(model: nn.Module) -> str:
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        t = v.detach().cpu().contiguous()
        h.update(str(t.dtype).encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


def load_for_eval(name_or_path: str, *, arch: str | None = None) -> tuple[nn.Module, dict[str, Any]]:
    """Build ``arch[.tag]`` with its pretrained weights, ``arch`` with a checkpoint file, or a repo folder.

    A repo folder (a directory holding ``config.json``, or any path ending in ``/``) is read by
    :func:`dsnet_zoo.hub.read_hub_folder`: architecture, arguments and metadata from its ``config.json``,
    weights only once their sha256 is the one recorded there. A checkpoint file needs ``arch`` (then it is
    the caller's own file, loaded unchecked), or must be the weights file of the repo folder it lies in,
    which is then read as that folder."""
    path = Path(name_or_path)
    if name_or_path.endswith(("/", os.sep)) or (path.is_dir() and (path / "config.json").is_file()):
        if not path.is_dir():
            raise FileNotFoundError(f"repo folder {path} does not exist")
        folder_arch, cfg, weights = read_hub_folder(path)
        if arch and arch != folder_arch:
            raise ValueError(f"{path}/config.json says the architecture is {folder_arch}, not {arch}")
        model = create(folder_arch, weights=cfg, checkpoint_path=weights)
        # checkpoint "FOLDER/": the trailing '/' keeps the reproduce command from naming a registered model
        ident = {"name": f"{folder_arch}.{cfg.tag}", "model": folder_arch, "tag": cfg.tag,
                 "checkpoint": f"{path.name}/", "source": cfg.source, "license": cfg.license,
                 "trained_on": cfg.dataset}
    elif path.suffix in (".safetensors", ".pt", ".pth", ".bin", ".ckpt") or path.is_file():
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {path} does not exist")
        folder_cfg = None
        if arch is None and (path.parent / "config.json").is_file():
            # the weights of a repo folder: read (and checked) as that folder
            arch, folder_cfg, weights = read_hub_folder(path.parent)
            if not weights.samefile(path):
                raise ValueError(f"{path} is not the weights file of the repo folder {path.parent} "
                                 f"({weights.name}): pass --arch ARCH to load it as your own checkpoint")
        if not arch:
            raise ValueError(f"which architecture is {path.name}? pass --arch ARCH (see `dsnet-zoo list`)")
        model = create(arch, weights=folder_cfg, checkpoint_path=path)
        ident = {"name": f"{arch}.{path.stem}", "model": arch, "tag": None, "checkpoint": path.name}
    else:
        cfg = get_pretrained_cfg(name_or_path, required=True)
        a, _ = split_model_name(name_or_path)
        model = create(f"{a}.{cfg.tag}", pretrained=True)
        ident = {"name": f"{a}.{cfg.tag}", "model": a, "tag": cfg.tag, "checkpoint": None,
                 "source": cfg.source, "license": cfg.license, "trained_on": cfg.dataset}
    loaded = (getattr(model, "pretrained_cfg", None) or {}).get("loaded_from") or {}
    ident["weights_sha256"] = loaded.get("sha256")
    ident["weights_source"] = loaded.get("source")
    return model, ident


def _describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
           "dsnet_zoo": __version__}
    for mod in ("torchvision",):  # imported only here: slow to import, and only its version is wanted
        try:
            out[mod] = __import__(mod).__version__
        except Exception:
            pass
    return out


# ------------------------------------------------------------------------------------------------
# cross-checks


def cross_check(table: dict[str, np.ndarray], columns: Iterable[Column], *, input_dim: int,
                indices: np.ndarray | None = None) -> dict[str, Any]:
    """Check every example; raise :class:`CrossCheckError` listing the contradictions.

    - robust (any attack, any eps) or certified implies clean-correct, so robust accuracy <= clean;
    - certified radius ``r`` (L2) > eps implies not broken by an L2 attack at eps, and
      ``r > sqrt(d) eps`` implies not broken by an Linf attack at eps (``||d||_2 <= sqrt(d) ||d||_inf``).
    """
    columns = list(columns)
    correct = table["clean/correct"].astype(bool)
    n = len(correct)
    idx = indices if indices is not None else np.arange(n)
    radius = table.get("certified/radius")
    if radius is not None and radius.dtype == object:
        radius = None
    problems: list[str] = []
    checked = []
    for col in columns:
        if col.kind not in ("robust", "certified"):
            continue
        vals = table[col.name]
        if vals.dtype == object:  # no certificate: nothing claimed
            continue
        vals = vals.astype(bool)
        bad = np.nonzero(vals & ~correct)[0]
        checked.append(f"{col.name} implies clean-correct")
        for i in bad[:10]:
            problems.append(f"example {idx[i]}: {col.name} is robust/certified but misclassified")
        if col.kind == "robust" and radius is not None:
            reach = col.eps if col.norm == "L2" else col.eps * math.sqrt(input_dim)
            broken = np.nonzero((radius > reach) & ~vals)[0]
            checked.append(f"certified radius > {col.norm} {format_eps(col.eps)} implies {col.name} robust")
            for i in broken[:10]:
                problems.append(f"example {idx[i]}: certified L2 radius {radius[i]:.6g} > {reach:.6g} but broken "
                                f"by {col.name} ({col.norm}, eps={format_eps(col.eps)}): the Lipschitz bound is "
                                "understated or an attack/certificate has a bug")
    if problems:
        raise CrossCheckError(f"{len(problems)} contradiction(s) in the per-example outcomes:\n  "
                              + "\n  ".join(problems[:40]))
    return {"passed": True, "checks": checked}


# ------------------------------------------------------------------------------------------------
# the run


def _batch_seed(seed: int, b: int) -> int:
    return (seed * 1_000_003 + b) % (2 ** 31 - 1)


def _index_summary(indices: np.ndarray) -> str:
    """The official indices of the evaluated images, in words (``-1`` = unknown)."""
    known = indices[indices >= 0]
    if len(known) == 0:
        return "unknown"
    lo, hi = int(known.min()), int(known.max())
    text = f"{lo}..{hi}"
    if len(known) < len(indices):
        return f"{text} (known for {len(known):,} of the {len(indices):,} images, -1 elsewhere)"
    if hi - lo + 1 > len(indices):
        return f"{text} ({hi - lo + 1 - len(indices):,} missing)"
    return text


def _reproduce_command(ident: dict[str, Any], cfg: "EvalConfig", dataset: str, split: str, n: int) -> str:
    metrics = cfg.metrics
    parts = ["dsnet-zoo", "eval", ident["name"] if ident.get("checkpoint") is None else ident["checkpoint"],
             "--dataset", dataset, "--n", str(n), "--metrics", ",".join(metrics), "--seed", str(cfg.seed),
             "--batch-size", str(cfg.batch_size)]
    if ident.get("checkpoint") is not None:
        parts += ["--arch", ident["model"]]
    if split != "test":
        parts += ["--split", split]
    if cfg.cert_eps != DEFAULT_CERT_EPS and "certified" in metrics:
        parts += ["--eps", ",".join(format_eps(e) for e in cfg.cert_eps)]
    if cfg.paper_eps != PAPER_EPS and "paper-pgd" in metrics:
        parts += ["--paper-eps", ",".join(format_eps(e) for e in cfg.paper_eps)]
    if cfg.aa_threats != STANDARD_THREATS and "autoattack" in metrics:
        parts += ["--aa-threats", ",".join(f"{nm}:{format_eps(e)}" for nm, e in cfg.aa_threats)]
    if "autoattack" in metrics and cfg.aa_mode != "auto":
        parts += ["--aa-full"]
    if "autoattack" in metrics and cfg.aa_cert_sample != 32:
        parts += ["--aa-cert-sample", str(cfg.aa_cert_sample)]
    if "autoattack" in metrics and cfg.aa_channels_last:
        parts += ["--aa-channels-last"]
    return " ".join(shlex.quote(p) for p in parts)


@dataclass(frozen=True)
class EvalConfig:
    """Everything :func:`evaluate` was asked for, resolved: the settings that define the numbers (set,
    metrics, radii, threats, seed, batch size), the files, and where and when the run happens.

    ``metrics`` starts with ``'clean'`` and has no duplicates; ``aa_threats`` defaults to
    ``STANDARD_THREATS``; ``world``/``rank`` are ``torchrun``'s (1/0 without it); ``t0`` and ``started`` are
    when :func:`evaluate` was called (the result's wall time and start date)."""

    dataset: str | EvalData
    split: str
    data_dir: str | os.PathLike | None
    n: int | None
    metrics: tuple[str, ...]
    cert_eps: tuple[float, ...]
    paper_eps: tuple[float, ...]
    aa_threats: tuple[tuple[str, float], ...]
    aa_mode: str
    aa_cert_sample: int
    aa_channels_last: bool
    batch_size: int
    seed: int
    out: str | os.PathLike | None
    state_dir: str | os.PathLike | None
    restart: bool
    max_batches: int | None
    progress: bool
    device: torch.device
    world: int
    rank: int
    t0: float
    started: str


def evaluate(model: str | nn.Module, dataset: "str | EvalData" = "cifar10-real", *, split: str = "test",
             data_dir: str | os.PathLike | None = None, n: int | None = None,
             metrics: Sequence[str] = DEFAULT_METRICS, cert_eps: Sequence[float] = DEFAULT_CERT_EPS,
             paper_eps: Sequence[float] = PAPER_EPS, aa_threats: Sequence[tuple[str, float]] | None = None,
             device: str | torch.device = "auto", batch_size: int = 256, seed: int = 0,
             out: str | os.PathLike | None = None, state_dir: str | os.PathLike | None = None,
             restart: bool = False, max_batches: int | None = None, progress: bool = True,
             arch: str | None = None, ident: dict[str, Any] | None = None, aa_mode: str = "auto",
             aa_cert_sample: int = 32, aa_channels_last: bool = False) -> dict[str, Any] | None:
    """Evaluate a model and return the result record (also written to ``out`` when given).

    ``model`` is ``arch[.tag]`` (pretrained weights), a checkpoint path (with ``arch``), or an
    ``nn.Module`` (then ``ident`` names it). ``dataset`` is a name (:func:`dsnet_zoo.data.load_dataset`)
    or an :class:`~dsnet_zoo.data.EvalData` built in memory. ``metrics`` from :func:`~.metrics.list_metrics`.
    ``aa_mode``: ``'auto'`` runs AutoAttack certificate-aware on models with a provable bound (certified
    points skipped, ``aa_cert_sample`` of them per threat attacked as a cross-check; see
    :class:`~.metrics.AutoAttackMetric`), ``'full'`` attacks every correct point. ``aa_channels_last`` runs
    the attacks in the channels-last memory layout, a speed setting (float32 rounding aside, the same
    numbers; see :func:`~.attacks.run_autoattack`): it is not part of the run's fingerprint, so a run may
    resume with it switched, and the result lists the batches attacked in each layout.
    ``max_batches`` stops after that many newly computed batches (per process) and returns ``None``,
    leaving the state to resume from. Per-example outcomes go to ``<out stem>.examples.json``; the
    returned record also carries them under ``'_examples'`` (not written into the result file).
    The arguments, resolved, become an :class:`EvalConfig` for the steps of the run.
    """
    t0 = time.time()
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")
    metrics = tuple(dict.fromkeys(["clean", *metrics]))
    metric_objs = [get_metric(m) for m in metrics]
    if batch_size <= 0:
        raise ValueError(f"batch size must be positive, got {batch_size}")

    info = distributed.env_info()
    dev = resolve_device(device, info.local_rank)
    cfg = EvalConfig(dataset=dataset, split=split, data_dir=data_dir, n=n, metrics=metrics, cert_eps=tuple(cert_eps),
                     paper_eps=tuple(paper_eps),
                     aa_threats=tuple(aa_threats) if aa_threats is not None else STANDARD_THREATS,
                     aa_mode=aa_mode, aa_cert_sample=aa_cert_sample, aa_channels_last=aa_channels_last,
                     batch_size=batch_size, seed=seed, out=out,
                     state_dir=state_dir, restart=restart, max_batches=max_batches, progress=progress, device=dev,
                     world=info.world, rank=info.rank, t0=t0, started=started)
    own_dist = info.enabled and not distributed.is_initialized()  # leave a caller's process group alone
    if own_dist:
        distributed.setup(dev)

    if isinstance(model, (str, os.PathLike)):
        model, ident = load_for_eval(str(model), arch=arch)
    elif ident is None:
        ident = {"name": type(model).__name__, "model": type(model).__name__, "tag": None, "checkpoint": None,
                 "weights_sha256": None}
    model = model.to(dev).eval()
    grads = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        return _evaluate(model, ident, metric_objs, cfg)
    finally:
        for p, g in zip(model.parameters(), grads):
            p.requires_grad_(g)
        if own_dist:
            distributed.teardown(info)


@dataclass
class _EvalRun:
    """What the steps of one evaluation share: the model, the data and the metrics set up on them."""

    cfg: EvalConfig
    model: nn.Module
    ident: dict[str, Any]
    metric_objs: list
    data: EvalData
    dataset: str  # the set's name
    dtype: torch.dtype
    certifier: Certifier
    input_dim: int
    ctx: MetricContext
    records: dict[str, Any]  # each metric's setup record, for its summary
    columns: list[Column]

    @property
    def n(self) -> int:
        return len(self.data)

    @property
    def n_batches(self) -> int:
        return math.ceil(self.n / self.cfg.batch_size)

    def batch_range(self, b: int) -> tuple[int, int]:
        return b * self.cfg.batch_size, min((b + 1) * self.cfg.batch_size, self.n)


def _evaluate(model: nn.Module, ident: dict[str, Any], metric_objs: list, cfg: EvalConfig) -> dict[str, Any] | None:
    """The run, in steps: data and metrics, the run's fingerprint and state folder, the batches (this
    process's share, skipping those saved), the merge, then (all batches done) the cross-checks, the result
    record and its files. ``None`` while batches remain."""
    run = _setup_run(model, ident, metric_objs, cfg)
    params_sha = _parameters_sha256(model)
    config, fingerprint = _run_config(run, params_sha)
    state_dir = _state_dir(run, fingerprint)
    _prepare_state(state_dir, config, fingerprint, cfg.restart, cfg.rank, cfg.world)
    upfront = [m for m in metric_objs if m.needs_certificates_upfront]
    if upfront:
        _certify_upfront(run, upfront)
    done = _run_batches(run, state_dir)
    done = _gather_batches(run, done)
    if done is None:
        return None
    result, examples = _result_record(run, done, params_sha, fingerprint)
    _write_result(run, result, examples, state_dir)
    result["_examples"] = examples
    return result


def _setup_run(model: nn.Module, ident: dict[str, Any], metric_objs: list, cfg: EvalConfig) -> _EvalRun:
    """Load the data (an in-memory :class:`EvalData` or a set by name), check the classes, set up the metrics."""
    dataset = cfg.dataset
    if isinstance(dataset, EvalData):
        data = dataset if cfg.n is None else dataset.subset(cfg.n)
        dataset = data.name
    else:
        data = load_dataset(dataset, cfg.split, data_dir=cfg.data_dir, n=cfg.n)
    num_classes = getattr(model, "num_classes", None)
    if num_classes is not None and num_classes != data.num_classes:
        raise ValueError(f"{ident['name']} has {num_classes} classes but {dataset} has {data.num_classes}")
    dtype = next(iter(model.parameters()), torch.zeros(())).dtype
    certifier = Certifier(model)
    input_dim = int(np.prod(data.x.shape[1:]))
    ctx = MetricContext(model=model, device=cfg.device, dtype=dtype, seed=cfg.seed, num_classes=data.num_classes,
                        input_dim=input_dim, cert_eps=cfg.cert_eps, paper_eps=cfg.paper_eps,
                        aa_threats=cfg.aa_threats, bound_info=certifier.info, aa_mode=cfg.aa_mode,
                        aa_cert_sample=cfg.aa_cert_sample, aa_channels_last=cfg.aa_channels_last)
    records = {m.name: m.setup(ctx) for m in metric_objs}
    columns = [c for m in metric_objs for c in m.columns(ctx)]
    return _EvalRun(cfg, model, ident, metric_objs, data, dataset, dtype, certifier, input_dim, ctx, records,
                    columns)


def _run_config(run: _EvalRun, params_sha: str) -> tuple[dict[str, Any], str]:
    """The settings that define the outcomes, and their fingerprint (a saved state must match it)."""
    cfg = run.cfg
    config = {"model": run.ident["name"], "parameters_sha256": params_sha, "dataset": run.dataset,
              "split": run.data.split, "n": run.n, "data_md5": run.data.info.get("md5"), "metrics": list(cfg.metrics),
              "cert_eps": list(cfg.cert_eps), "paper_eps": list(cfg.paper_eps),
              "aa_threats": [list(t) for t in cfg.aa_threats], "seed": cfg.seed, "batch_size": cfg.batch_size,
              "dtype": str(run.dtype)}
    if "autoattack" in cfg.metrics:  # only then, so that the fingerprints of other results stay as they were
        config["aa_mode"], config["aa_cert_sample"] = cfg.aa_mode, cfg.aa_cert_sample
    return config, hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def _state_dir(run: _EvalRun, fingerprint: str) -> Path:
    """``<out>.partial/``, or a cache folder named by the run and its fingerprint when there is no ``out``."""
    cfg = run.cfg
    if cfg.state_dir is not None:
        return Path(cfg.state_dir)
    if cfg.out is not None:
        return Path(str(cfg.out) + ".partial")
    stem = result_stem(run.ident["name"], run.dataset, cfg.metrics)
    cache = os.environ.get("XDG_CACHE_HOME", "").strip() or str(Path.home() / ".cache")
    return Path(cache) / "dsnet_zoo" / "eval-state" / f"{stem}-{fingerprint}"


def _certify_upfront(run: _EvalRun, upfront: list) -> None:
    """Every example's certificate, in the run's own batches (the same arithmetic as :func:`_run_batches`), so
    that a metric can choose among all examples whatever the batch, process count or resumption."""
    dev = run.cfg.device
    radius_all, correct_all = np.zeros(run.n), np.zeros(run.n, dtype=bool)
    for b in range(run.n_batches):
        lo, hi = run.batch_range(b)
        x, y = run.data.float_batch(lo, hi)
        logits, radii = run.certifier.logits_and_radii(x.to(dev, run.dtype).contiguous(), y.to(dev))
        radius_all[lo:hi] = radii["radius"].cpu().numpy()
        correct_all[lo:hi] = (logits.argmax(1) == y.to(dev)).cpu().numpy()
    for m in upfront:
        m.prepare(run.ctx, radius_all, correct_all)


def _run_batches(run: _EvalRun, state_dir: Path) -> dict[int, dict[str, Any]]:
    """This process's batches (``b = rank (mod world)``): those saved in ``state_dir`` are read back, the others
    computed (at most ``max_batches`` now) and saved one by one."""
    cfg = run.cfg
    mine = [b for b in range(run.n_batches) if b % cfg.world == cfg.rank]
    done: dict[int, dict[str, Any]] = {}
    for b in mine:
        f = state_dir / f"batch_{b:06d}.json"
        if f.is_file():
            done[b] = json.loads(f.read_text())
    todo = [b for b in mine if b not in done]
    todo_now = todo[:cfg.max_batches] if cfg.max_batches is not None else todo

    bar = None
    if cfg.progress and cfg.rank == 0 and todo_now:
        bar = tqdm(total=len(todo_now), unit="batch", desc=f"{run.ident['name']} on {run.dataset}",
                   dynamic_ncols=True, file=sys.stderr)
    for b in todo_now:
        raise_if_interrupted()  # a Ctrl-C that a finaliser swallowed still stops the run here
        rec = _run_batch(run, b)
        atomic_write_json(state_dir / f"batch_{b:06d}.json", rec)
        done[b] = json.loads(json.dumps(_jsonable(rec)))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return done


def _run_batch(run: _EvalRun, b: int) -> dict[str, Any]:
    """Batch ``b``: logits and certificates, then every metric's columns, with the seconds it took."""
    tb = time.time()
    lo, hi = run.batch_range(b)
    x, y = run.data.float_batch(lo, hi)
    x = x.to(run.cfg.device, run.dtype).contiguous()
    y = y.to(run.cfg.device)
    logits, radii = run.certifier.logits_and_radii(x, y)
    batch = Batch(index=b, seed=_batch_seed(run.cfg.seed, b), x=x, y=y, logits=logits, radii=radii, start=lo)
    cols: dict[str, Any] = {}
    for m in run.metric_objs:
        cols.update(m.run_batch(run.ctx, batch))
    rec = {"batch": b, "start": lo, "stop": hi, "time_s": time.time() - tb,
           "columns": {k: _jsonable(np.asarray(v)) for k, v in cols.items()}}
    if run.cfg.aa_channels_last and "autoattack" in run.cfg.metrics:
        rec["aa_channels_last"] = True
    return rec


def _gather_batches(run: _EvalRun, done: dict[int, dict[str, Any]]) -> dict[int, dict[str, Any]] | None:
    """Every process's batches (``all_gather_object`` under ``torchrun``), or ``None`` while some remain."""
    world = run.cfg.world
    finished_here = all(b in done for b in range(run.n_batches) if b % world == run.cfg.rank)
    if world > 1:
        flags = [None] * world
        dist.all_gather_object(flags, finished_here)
        if not all(flags):
            return None
        parts = [None] * world
        dist.all_gather_object(parts, done)
        merged: dict[int, Any] = {}
        for p in parts:
            merged.update({int(k): v for k, v in p.items()})
        done = merged
    elif not finished_here:
        return None
    if sorted(done) != list(range(run.n_batches)):
        raise RuntimeError(f"batches missing after the merge: {sorted(set(range(run.n_batches)) - set(done))}")
    return done


def _result_record(run: _EvalRun, done: dict[int, dict[str, Any]], params_sha: str,
                   fingerprint: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The cross-checked per-example table summarised into the result record, and the per-example record."""
    cfg, ident, data, dataset = run.cfg, run.ident, run.data, run.dataset
    table = _merge_columns(done, run.n_batches, run.columns)
    indices = data.indices.numpy()
    checks = cross_check(table, run.columns, input_dim=run.input_dim, indices=indices)

    metric_records = {m.name: m.summarize(run.ctx, table, run.records[m.name]) for m in run.metric_objs}
    if "autoattack" in metric_records:
        flags = [f for m in run.metric_objs if m.name == "autoattack" for f in getattr(m, "flags", [])]
        metric_records["autoattack"]["flags"] = flags
        nhwc = sorted(b for b in done if done[b].get("aa_channels_last"))
        if nhwc:  # only then, so that the records of runs in the default layout stay as they were
            metric_records["autoattack"]["attack_memory_format"] = {
                "channels_last_batches": nhwc, "contiguous_batches": sorted(b for b in done if b not in nhwc)}
    compute = sum(float(done[b]["time_s"]) for b in done)
    wall = time.time() - cfg.t0
    result = {
        "schema": SCHEMA,
        **{k: ident.get(k) for k in ("name", "model", "tag", "checkpoint", "source", "license", "trained_on")},
        "weights_sha256": ident.get("weights_sha256"),
        "weights_source": ident.get("weights_source"),
        "parameters_sha256": params_sha,
        "num_params": int(sum(p.numel() for p in run.model.parameters())),
        "dataset": {"name": dataset, "split": data.split, "n": run.n, "indices": _index_summary(indices),
                    "num_classes": data.num_classes, **data.info},
        "lipschitz": run.certifier.info,
        "metrics": metric_records,
        "cross_checks": checks,
        "config": {"seed": cfg.seed, "batch_size": cfg.batch_size, "batch_seed": "seed * 1000003 + batch_index",
                   "fingerprint": fingerprint},
        "run": {"device": _describe_device(cfg.device), "world_size": cfg.world, "wall_time_s": round(wall, 3),
                "compute_time_s": round(compute, 3), "started": cfg.started,
                "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"), "versions": _versions()},
        "command": _reproduce_command(ident, cfg, dataset, data.split, run.n),
    }
    timings = {c.name for c in run.columns if c.kind == "seconds"}
    examples = {"name": ident["name"], "dataset": dataset, "split": data.split, "index": indices,
                "label": data.y.numpy(), **{k: v for k, v in table.items() if k not in timings}}
    return result, examples


def _write_result(run: _EvalRun, result: dict[str, Any], examples: dict[str, Any], state_dir: Path) -> None:
    """``out`` and ``<out stem>.examples.json`` (rank 0), then the state folder is removed."""
    cfg = run.cfg
    if cfg.out is not None:
        out = Path(cfg.out)
        result["examples_file"] = out.name[:-len(".json")] + ".examples.json" if out.name.endswith(".json") \
            else out.name + ".examples.json"
        if cfg.rank == 0:
            atomic_write_json(out.parent / result["examples_file"], examples)
            atomic_write_json(out, result)
    if cfg.world > 1:
        dist.barrier()
    if cfg.rank == 0:
        shutil.rmtree(state_dir, ignore_errors=True)


def _prepare_state(state_dir: Path, config: dict, fingerprint: str, restart: bool, rank: int, world: int) -> None:
    cfg_file = state_dir / "config.json"
    if rank == 0:
        if restart and state_dir.exists():
            shutil.rmtree(state_dir)
        if cfg_file.is_file():
            old = json.loads(cfg_file.read_text())
            if old.get("fingerprint") != fingerprint:
                raise ValueError(
                    f"{state_dir} holds the partial state of a different run (config {old.get('config')}); "
                    "delete it or pass --restart to start over")
        else:
            atomic_write_json(cfg_file, {"fingerprint": fingerprint, "config": config})
    if world > 1:
        dist.barrier()


def _merge_columns(done: dict[int, Any], n_batches: int, columns: list[Column]) -> dict[str, np.ndarray]:
    table: dict[str, np.ndarray] = {}
    for col in columns:
        parts = [done[b]["columns"][col.name] for b in range(n_batches)]
        flat = [v for p in parts for v in p]
        if col.kind in ("radius", "seconds"):
            table[col.name] = np.array([math.nan if v is None else float(v) for v in flat], dtype=np.float64)
        elif any(v is None for v in flat):
            table[col.name] = np.array(flat, dtype=object)
        elif col.kind == "pred":
            table[col.name] = np.array(flat, dtype=np.int64)
        else:
            table[col.name] = np.array(flat, dtype=bool)
    return table
