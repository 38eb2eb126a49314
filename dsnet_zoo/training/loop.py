"""The training loop: :func:`train` (or :func:`run_training` of a :class:`TrainConfig`), from a :class:`Recipe`
to a Hub-ready repo folder, as a sequence of named steps (build model and data, resume, one epoch, evaluate,
checkpoint, export).

What ``out_dir`` holds after a run:

- ``checkpoint.pt``: model, optimizer, scheduler, EMA, RNG states (torch, CUDA, numpy, python),
  the data position (epoch, global step) and the history; rewritten atomically after every epoch.
- ``log.jsonl``: one JSON object per epoch (loss, accuracy or MSE, learning rate, time, images/s).
- ``curves.png``: loss and accuracy (or MSE) per epoch.
- ``recipe.json``, ``metrics.json`` and ``hub/`` (``model.safetensors``, ``config.json``,
  ``README.md``, written by :func:`dsnet_zoo.hub.write_hub_repo`, whose ``recipe`` is this run's).

Resume guarantee: on CPU, ``train(r, d)`` and ``train(r, d, stop_after=k)`` followed by
``train(r, d, resume=True)`` end with bit-identical parameters, because the data order and the
augmentation are functions of the seeds and the epoch/step counters (never of a running
generator), and every other state that evolves (model, optimizer, scheduler, EMA, global RNGs)
is checkpointed. It needs the same device type, thread count and library versions.

Mixed precision: with ``amp`` ``bf16`` (``auto`` on CUDA) the forward pass runs under bf16
autocast, so convolutions and matmuls run in bf16; normalisation layers and constraint modules
(any module with ``_compute_weight`` or with ``autocast_float32 = True``; a module that sets
``autocast_float32 = False`` manages its own precision, as the 1-Lipschitz layers' maps do: their
normaliser runs in float32, their conv or matmul in bf16) run with autocast off on float32 inputs, and losses, bounds and
evaluation are float32. Parameters and optimizer states stay float32.
"""
from __future__ import annotations

import copy
import io
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .._api import create
from ..evaluation.certify import certified_radii
from ..evaluation.metrics import DEFAULT_CERT_EPS
from ..hub import WeightsCfg, load_weights, sha256_file, write_hub_repo
from ..layers.constrained_linear import load_normalizer_states, normalizer_states
from ..registry import RetiredWeightsError, get_pretrained_cfg
from ..utils import (atomic_write_bytes, atomic_write_text, cpu_has_fast_bf16, raise_if_interrupted,
                     resolve_device)
from .. import distributed as ddp
from .data import TrainData, iterate_epoch, load_train_data, to_model_input
from .losses import build_loss
from .recipes import Recipe

__all__ = ["train", "run_training", "TrainConfig", "TrainResult", "ModelEMA", "resolve_device", "evaluate_model",
           "CHECKPOINT", "LOG", "PLOT"]

CHECKPOINT = "checkpoint.pt"
LOG = "log.jsonl"
PLOT = "curves.png"


@dataclass
class TrainResult:
    out_dir: Path
    recipe: Recipe
    history: list[dict[str, Any]]
    metrics: dict[str, Any] = field(default_factory=dict)
    hub: dict[str, Any] | None = None
    model: nn.Module | None = None  # the exported model (EMA weights when the recipe has EMA), rank 0
    completed: bool = True
    state: dict[str, torch.Tensor] | None = None  # this rank's trained (non-EMA) weights, on CPU


# -- small pieces ---------------------------------------------------------------------------------
class ModelEMA:
    """Exponential moving average of a model's floating-point state (parameters and buffers).

    ``decay_t = min(decay, (1 + t) / (10 + t))`` at update ``t``: early averages are not dominated
    by the random initialisation. Non-float buffers are copied.
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.updates = 0
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for k, v in model.state_dict().items():
            s = self.shadow[k]
            if v.dtype.is_floating_point:
                s.mul_(d).add_(v.detach(), alpha=1 - d)
            else:
                s.copy_(v)

    def state_dict(self) -> dict[str, Any]:
        return {"decay": self.decay, "updates": self.updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.decay, self.updates = state["decay"], state["updates"]
        for k, v in state["shadow"].items():
            self.shadow[k].copy_(v)

    def copy_to(self, model: nn.Module) -> None:
        model.load_state_dict(self.shadow)


def _float32_islands(model: nn.Module, device_type: str) -> list:
    """Run norm layers and constraint modules with autocast off, on float32 inputs."""
    norm_types = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm, nn.LocalResponseNorm)
    handles = []

    def pre(mod, args):
        ctx = torch.autocast(device_type=device_type, enabled=False)
        ctx.__enter__()
        mod._dsnet_amp_ctx = ctx
        return tuple(a.float() if torch.is_tensor(a) and a.dtype in (torch.bfloat16, torch.float16) else a
                     for a in args)

    def post(mod, args, out):
        ctx = mod.__dict__.pop("_dsnet_amp_ctx", None)
        if ctx is not None:
            ctx.__exit__(None, None, None)

    for m in model.modules():
        flag = getattr(m, "autocast_float32", None)
        if flag is False:  # the module manages its own precision (e.g. float32 normaliser, bf16 conv)
            continue
        if isinstance(m, norm_types) or hasattr(m, "_compute_weight") or flag:
            handles.append(m.register_forward_pre_hook(pre))
            handles.append(m.register_forward_hook(post, always_call=True))
    return handles


def _atomic_torch_save(obj: Any, path: Path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def _atomic_text(path: Path, text: str) -> None:
    atomic_write_text(path, text)


def _rng_state() -> dict[str, Any]:
    # numpy's key array goes in as a tensor so the checkpoint loads with weights_only=True
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    numpy_state = (kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached))
    state = {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _seed_all(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def _make_optimizer(recipe: Recipe, model: nn.Module) -> torch.optim.Optimizer:
    """Weight decay on weight matrices/kernels only (``ndim >= 2``); biases, step sizes and norm
    parameters are not decayed."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    other = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    groups = [{"params": decay, "weight_decay": recipe.weight_decay}, {"params": other, "weight_decay": 0.0}]
    groups = [g for g in groups if g["params"]]
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=recipe.lr, momentum=recipe.momentum,
                               nesterov=recipe.nesterov and recipe.momentum > 0)
    if recipe.optimizer == "adam":
        return torch.optim.Adam(groups, lr=recipe.lr)
    return torch.optim.AdamW(groups, lr=recipe.lr)


def _make_scheduler(recipe: Recipe, opt: torch.optim.Optimizer, steps_per_epoch: int):
    """Stepped once per batch. ``cosine``: linear warm-up over ``warmup_epochs`` then cosine to 0;
    ``onecycle``: torch's OneCycleLR with peak ``lr``; ``constant``: ``lr`` throughout."""
    total = recipe.epochs * steps_per_epoch
    if recipe.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=total)
    warm = int(round(recipe.warmup_epochs * steps_per_epoch))

    def factor(step: int) -> float:
        if recipe.schedule == "constant":
            return 1.0
        if step < warm:
            return (step + 1) / warm
        t = (step - warm) / max(1, total - warm)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


@torch.no_grad()
def evaluate_model(model: nn.Module, x: torch.Tensor, y: torch.Tensor, task: str, loss_fn=None,
                   batch_size: int = 500, dtype: torch.dtype = torch.float32,
                   cert_eps: float | None = None) -> dict[str, float]:
    """Loss and accuracy (percent) of a classifier, or MSE of a regressor, on ``(x, y)`` in ``dtype``,
    in eval mode, without autocast. With ``cert_eps`` and a model with a certified bound, also
    ``cert_acc``: the percentage certified at L2 radius ``cert_eps`` (global certificate); the training
    log records it at 36/255."""
    was = model.training
    model.eval()
    bound_fn = getattr(model, "lipschitz_upper_bound", None) if cert_eps is not None else None
    bound = bound_fn() if bound_fn is not None else None
    total, correct, certified, loss_sum, sq_sum = 0, 0, 0, 0.0, 0.0
    for i in range(0, len(y), batch_size):
        xb = to_model_input(x[i:i + batch_size], dtype)
        yb = y[i:i + batch_size]
        out = model(xb)
        n = len(yb)
        if task == "classification":
            correct += int((out.argmax(1) == yb).sum())
            if bound is not None:
                certified += int((certified_radii(out, yb, float(bound))["global"] > cert_eps).sum())
            if loss_fn is not None:
                loss_sum += float(loss_fn(out, yb)) * n
        else:
            sq_sum += float(((out - yb.to(out.dtype)) ** 2).mean(dim=tuple(range(1, out.dim()))).sum())
        total += n
    model.train(was)
    if task == "classification":
        res = {"acc": 100.0 * correct / total}
        if bound is not None:
            res["cert_acc"] = 100.0 * certified / total
            res["lipschitz_bound"] = float(bound)
        if loss_fn is not None:
            res["loss"] = loss_sum / total
        return res
    return {"mse": sq_sum / total, "loss": sq_sum / total}


# matplotlib is the optional ``plot`` extra: imported only where a plot is checked for or written
def _check_plot_available() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError as e:
        raise ImportError("the training plot needs matplotlib: pip install 'dsnet_zoo[plot]' "
                          "(or pass plot=False / --no-plot)") from e


def write_plot(history: list[dict[str, Any]], path: Path, title: str = "") -> None:
    """Loss (train, eval) and accuracy or MSE per epoch as a PNG, written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [h["epoch"] for h in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(ep, [h["train_loss"] for h in history], label="train")
    if all("eval_loss" in h for h in history):
        a.plot(ep, [h["eval_loss"] for h in history], label="eval")
    if not all("eval_acc" in h for h in history):
        a.set_yscale("log")  # regression losses span decades
    a.set_xlabel("epoch"), a.set_ylabel("loss"), a.legend()
    if all("eval_acc" in h for h in history):
        b.plot(ep, [h["train_acc"] for h in history], label="train")
        b.plot(ep, [h["eval_acc"] for h in history], label="eval")
        if all("eval_cert_acc" in h for h in history):
            b.plot(ep, [h["eval_cert_acc"] for h in history], label="eval, certified at 36/255")
        b.set_ylabel("accuracy (%)")
    else:
        b.plot(ep, [h["eval_mse"] for h in history], label="eval MSE")
        b.set_yscale("log"), b.set_ylabel("MSE")
    b.set_xlabel("epoch"), b.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)

    atomic_write_bytes(path, buf.getvalue())


# -- final metrics ----------------------------------------------------------------------------------
def final_metrics(model: nn.Module, data: TrainData, recipe: Recipe) -> dict[str, Any]:
    """What goes into the weights' ``metrics``.

    Classification: ``{eval_set: {"clean": accuracy in percent}}`` on the evaluation set, plus the
    number of images. Regression: test MSE in float32 and in float64 (the float32 weights run in
    float64) and, when the model has mass-preserving blocks, the largest relative change of the
    conserved sum ``|sum f(x) - sum x| / |sum x|`` over the test set in float64.
    """
    model = model.to("cpu").eval()
    x, y = data.x_eval.cpu(), data.y_eval.cpu()
    if data.task == "classification":
        res = evaluate_model(model, x, y, "classification")
        return {recipe.eval_set: {"clean": round(res["acc"], 4)}, "eval_images": len(y),
                "eval_split": recipe.eval_split}
    m32 = evaluate_model(model, x, y, "regression")["mse"]
    x64 = data.extra.get("x_eval_float64", x.double())
    y64 = data.extra.get("y_eval_float64", y.double())
    m64 = _copy_as(model, torch.float64)
    with torch.no_grad():
        out = m64(x64)
    metrics: dict[str, Any] = {
        "test_mse": float(((out - y64) ** 2).mean()), "test_mse_float32": m32,
        "test_examples": len(y), "eval_set": f"{recipe.eval_set} ({recipe.eval_split})"}
    kinds = {k for _, _, k in getattr(model, "structure_blocks", lambda: [])()}
    if "mass" in kinds:
        rel = ((out.sum(1) - x64.sum(1)).abs() / x64.sum(1).abs()).max()
        metrics["conserved_sum_max_rel_error_float64"] = float(rel)
    return metrics


def _copy_as(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    return copy.deepcopy(model).to(dtype).eval()


# -- the loop ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class TrainConfig:
    """One training run: the :class:`Recipe` (every choice that determines the weights; a recipe dict is
    converted with :meth:`Recipe.from_dict`) and how to run it. Nothing but the recipe changes the weights.

    - ``out_dir``: the run folder (see the module doc); ``data_dir``: the datasets' root.
    - ``resume``: continue from ``out_dir/checkpoint.pt`` (which must come from the same recipe);
      without a checkpoint there, training starts from epoch 1. Without ``resume`` an existing
      checkpoint is an error (it is never overwritten by accident).
    - ``stop_after``: stop after that epoch as if interrupted (checkpoint written, no Hub folder).
    - ``write_hub``: write ``out_dir/hub``; ``base_cfg``: a :class:`~dsnet_zoo.hub.WeightsCfg` to complete
      (a registered tag's, when rerunning ``ARCH.TAG``); ``hub_repo_id``: the Hub repo id recorded in the cfg.
    - ``data``: in-memory data instead of ``recipe.dataset`` (tests); ``log``: where messages go.
    """

    recipe: Recipe
    out_dir: Path
    data_dir: str | os.PathLike | None = None
    device: str | torch.device = "auto"
    resume: bool = False
    progress: bool = True
    plot: bool = True
    stop_after: int | None = None
    write_hub: bool = True
    base_cfg: WeightsCfg | None = None
    hub_repo_id: str | None = None
    data: TrainData | None = None
    log: Callable[[str], Any] = print

    def __post_init__(self) -> None:
        if not isinstance(self.recipe, Recipe):
            object.__setattr__(self, "recipe", Recipe.from_dict(self.recipe))
        object.__setattr__(self, "out_dir", Path(self.out_dir))

    @property
    def checkpoint(self) -> Path:
        return self.out_dir / CHECKPOINT


@dataclass
class _Run:
    """What the steps of one run share: the built model, data and optimisation, and the position."""

    cfg: TrainConfig
    dev: torch.device
    dist: ddp.DistInfo
    model: nn.Module
    data: TrainData
    data_dev: TrainData
    steps_per_epoch: int
    loss_fn: Callable
    opt: torch.optim.Optimizer
    sched: Any
    ema: ModelEMA | None
    amp_dtype: torch.dtype | None
    net: nn.Module  # the model, wrapped in DDP when distributed
    history: list[dict[str, Any]] = field(default_factory=list)
    start_epoch: int = 1
    step: int = 0

    @property
    def recipe(self) -> Recipe:
        return self.cfg.recipe

    @property
    def main(self) -> bool:
        return self.dist.is_main


def train(recipe: Recipe, out_dir: str | os.PathLike, *, data_dir: str | os.PathLike | None = None,
          device: str | torch.device = "auto", resume: bool = False, progress: bool = True,
          plot: bool = True, stop_after: int | None = None, write_hub: bool = True,
          base_cfg=None, hub_repo_id: str | None = None, data: TrainData | None = None,
          log=print) -> TrainResult:
    """Train ``recipe`` into ``out_dir`` (see the module doc for what it writes, :class:`TrainConfig`
    for the options). Under ``torchrun`` every process calls this; rank 0 writes all files."""
    return run_training(TrainConfig(recipe, Path(out_dir), data_dir=data_dir, device=device, resume=resume,
                                    progress=progress, plot=plot, stop_after=stop_after, write_hub=write_hub,
                                    base_cfg=base_cfg, hub_repo_id=hub_repo_id, data=data, log=log))


def run_training(cfg: TrainConfig) -> TrainResult:
    """:func:`train` from a :class:`TrainConfig`: the steps below, in this order (the order of the random
    draws and of the operations is part of the bit-for-bit guarantee)."""
    if cfg.plot:
        _check_plot_available()
    env = ddp.env_info()
    _check_run_dir(cfg)
    init_file = _retrained_parent(cfg, env)
    dev = resolve_device(cfg.device, env.local_rank)
    dist_info = ddp.setup(dev)
    try:
        model, data = _build_model_and_data(cfg, init_file)
        if dist_info.is_main:  # written once the recipe's model and data are known to load
            _write_recipe(cfg)
        run = _build_run(cfg, dev, dist_info, model, data)
        if cfg.resume:
            _resume(run)
        completed = _train_epochs(run)
        return _finish(run, completed)
    finally:
        ddp.teardown(dist_info)


# -- the steps of a run -----------------------------------------------------------------------------
def _check_run_dir(cfg: TrainConfig) -> None:
    if cfg.checkpoint.exists() and not cfg.resume:
        raise FileExistsError(f"{cfg.checkpoint} exists: pass resume=True (--resume) to continue that run, "
                              "or choose another output folder")


def _retrained_parent(cfg: TrainConfig, env: ddp.DistInfo) -> Path | None:
    """The weights file a recipe starting from *retired* weights starts from: their recipe rerun in
    ``out_dir/init_from-<arch.tag>/`` (trained here unless a finished rerun is there; an interrupted one is
    resumed), compared with the published sha256. ``None`` when the recipe has no ``init_from`` or its weights
    are hosted (they are loaded hash-checked instead). Runs before the recipe seeds its generators, so the
    run's own random draws are the same either way."""
    name = cfg.recipe.init_from
    if not name:
        return None
    try:
        get_pretrained_cfg(name, required=True)
        return None
    except RetiredWeightsError:
        parent = get_pretrained_cfg(name, retired=True)
    run_dir = cfg.out_dir / f"init_from-{name}"
    weights = run_dir / "hub" / parent.filename
    if not weights.exists():
        if env.enabled:
            raise ValueError(f"{cfg.recipe.tag} starts from {name}, whose weights are retired (not hosted): train "
                             f"them once on one process first, `dsnet-zoo train {name} --out {run_dir}`, then rerun "
                             "this command")
        cfg.log(f"{cfg.recipe.model}.{cfg.recipe.tag} starts from {name}, whose weights are retired (not hosted): "
                f"retraining them from their recorded recipe in {run_dir} first")
        train(parent.recipe, run_dir, data_dir=cfg.data_dir, device=cfg.device,
              resume=(run_dir / CHECKPOINT).exists(), progress=cfg.progress, plot=cfg.plot, base_cfg=parent,
              hub_repo_id=parent.hf_hub_id, log=cfg.log)
    got = sha256_file(weights)
    if env.is_main:
        if got == parent.sha256:
            cfg.log(f"the rerun of {name} in {run_dir} is bit for bit the published weights (sha256 {got[:12]}...)")
        else:
            cfg.log(f"warning: the rerun of {name} in {run_dir} has sha256 {got[:12]}..., the published weights "
                    f"{parent.sha256[:12]}... (reruns are bit for bit only on CPU with OMP_NUM_THREADS=1 and the "
                    f"same library versions); {cfg.recipe.tag} starts from the rerun")
    return weights


def _build_model_and_data(cfg: TrainConfig, init_file: Path | None = None) -> tuple[nn.Module, TrainData]:
    """Seed every generator, build the model (the first random draws), then load the data."""
    recipe = cfg.recipe
    _seed_all(recipe.seed)
    model = create(recipe.model, **dict(recipe.model_args))
    if init_file is not None:  # a warm restart from retired weights, retrained by _retrained_parent
        load_weights(model, checkpoint_path=init_file)
    elif recipe.init_from:  # a warm restart: the tag's weights, hash-checked, replace the seeded initialisation
        load_weights(model, get_pretrained_cfg(recipe.init_from, required=True))
    data = cfg.data if cfg.data is not None else load_train_data(recipe, cfg.data_dir)
    if data.task == "classification" and getattr(model, "num_classes", None) != data.num_classes:
        raise ValueError(f"{recipe.model} has {getattr(model, 'num_classes', None)} classes but "
                         f"{recipe.dataset} has {data.num_classes}")
    return model, data


def _write_recipe(cfg: TrainConfig) -> None:
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    _atomic_text(cfg.out_dir / "recipe.json", cfg.recipe.to_json() + "\n")


def _build_run(cfg: TrainConfig, dev: torch.device, dist_info: ddp.DistInfo, model: nn.Module,
               data: TrainData) -> _Run:
    """Model and data on the device, then loss, optimizer, scheduler, EMA, mixed precision and DDP."""
    recipe = cfg.recipe
    model.to(dev)
    if recipe.channels_last:  # NHWC convolutions: the fast layout of the CPU (oneDNN) and GPU kernels
        model.to(memory_format=torch.channels_last)
    data_dev = data.to(dev)
    steps_per_epoch = len(data.y_train) // recipe.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"batch size {recipe.batch_size} exceeds the {len(data.y_train)} training examples")

    loss_fn = build_loss(recipe, model)
    opt = _make_optimizer(recipe, model)
    sched = _make_scheduler(recipe, opt, steps_per_epoch)
    ema = ModelEMA(model, recipe.ema) if recipe.ema else None
    amp_dtype = torch.bfloat16 if (recipe.amp == "bf16" or (recipe.amp == "auto" and dev.type == "cuda")) else None
    if amp_dtype is not None:
        _float32_islands(model, dev.type)
        if dev.type == "cpu" and dist_info.is_main and not cpu_has_fast_bf16():
            cfg.log(f"warning: amp {recipe.amp!r} on a CPU without a fast bf16 path (AVX2 only, no AVX-512): "
                    "autocast is emulated there, about 13x slower than float32 (measured on an AMD EPYC, Zen 3). "
                    "A recipe with \"amp\": \"none\" trains in float32 much faster, but it is another recipe: its "
                    "weights are not the recorded ones bit for bit")
    net: nn.Module = model
    if dist_info.enabled:
        net = nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)
    return _Run(cfg, dev, dist_info, model, data, data_dev, steps_per_epoch, loss_fn, opt, sched, ema,
                amp_dtype, net)


def _resume(run: _Run) -> None:
    """Restore every evolving state from the checkpoint, if there is one (``resume``)."""
    ckpt_path, recipe, log = run.cfg.checkpoint, run.recipe, run.cfg.log
    if not ckpt_path.exists():
        if run.main:
            log(f"no checkpoint in {run.cfg.out_dir}: starting {recipe.model} from epoch 1")
        return
    state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    # compared as recipes, so a field added later (absent from an older checkpoint, at its default) is no change
    saved = Recipe.from_dict(state["recipe"]).to_dict()
    if saved != recipe.to_dict():
        diff = sorted(k for k in set(saved) | set(recipe.to_dict()) if saved.get(k) != recipe.to_dict().get(k))
        raise ValueError(f"{ckpt_path} was written by a different recipe (fields {', '.join(diff)} "
                         "differ); resume with the same recipe or choose another output folder")
    run.model.load_state_dict(state["model"])
    # after load_state_dict, which resets them: the training-time normalisers' power vectors
    # and refresh counters evolve like the weights and are needed for a bit-for-bit resume
    if "normalizers" in state:
        load_normalizer_states(run.model, state["normalizers"])
    elif run.main and normalizer_states(run.model):
        log(f"{ckpt_path} predates the saved normaliser state: resuming, but not bit for bit "
            "(the power vectors restart and the certified ratio is refreshed at the next step)")
    run.opt.load_state_dict(state["optimizer"])
    run.sched.load_state_dict(state["scheduler"])
    if run.ema is not None:
        run.ema.load_state_dict(state["ema"])
    _set_rng_state(state["rng"])
    run.history = state["history"]
    run.start_epoch, run.step = state["epoch"] + 1, state["step"]
    if run.main:
        log(f"resuming {recipe.model} from {ckpt_path} after epoch {state['epoch']} (step {run.step})")


def _train_epochs(run: _Run) -> bool:
    """Epochs ``start_epoch..epochs``: train, then (rank 0) evaluate, checkpoint and log each. Returns
    ``False`` when ``stop_after`` stopped the run early."""
    recipe = run.recipe
    bar = None
    if run.cfg.progress and run.main:
        bar = tqdm(total=recipe.epochs * run.steps_per_epoch, initial=(run.start_epoch - 1) * run.steps_per_epoch,
                   desc=recipe.model, unit="step", dynamic_ncols=True, file=sys.stderr)
    eval_model = _copy_as(run.model, torch.float32) if run.ema is not None else None
    completed = True
    for epoch in range(run.start_epoch, recipe.epochs + 1):
        sums, seconds = _train_one_epoch(run, epoch, bar)
        record = _train_record(run, epoch, sums)
        if run.main:
            _evaluate_epoch(run, record, eval_model)
            record.update(seconds=round(seconds, 3), examples_per_s=round(float(sums[2]) / seconds, 1))
            run.history.append(record)
            if bar is not None:
                bar.set_postfix(epoch=epoch, loss=f"{record['train_loss']:.4g}",
                                **({"eval_acc": f"{record['eval_acc']:.2f}"} if "eval_acc" in record
                                   else {"eval_mse": f"{record['eval_mse']:.3g}"}))
            _save_checkpoint(run, epoch)
            _write_log(run)
        ddp.barrier(run.dist)
        stop_after = run.cfg.stop_after
        if stop_after is not None and epoch >= stop_after and epoch < recipe.epochs:
            completed = False
            break
    if bar is not None:
        bar.close()
    return completed


def _train_one_epoch(run: _Run, epoch: int, bar) -> tuple[torch.Tensor, float]:
    """One pass over this rank's share of the epoch's batches; returns the all-reduced sums
    ``(loss * n, correct, n)`` and the seconds it took."""
    run.net.train()
    t0 = time.perf_counter()
    sums = torch.zeros(3, dtype=torch.float64, device=run.dev)  # loss * n, correct, n
    refresh = getattr(run.loss_fn, "refresh", None)
    for xb, yb in iterate_epoch(run.data_dev, run.recipe, epoch, run.step, run.dist.rank, run.dist.world, run.dev):
        if run.recipe.channels_last and xb.dim() == 4:
            xb = xb.contiguous(memory_format=torch.channels_last)
        raise_if_interrupted()  # a Ctrl-C that a finaliser swallowed still stops the run here
        if refresh is not None:
            refresh()
        out_b, loss = _train_step(run, xb, yb, epoch)
        with torch.no_grad():
            n = len(yb)
            sums[0] += loss.detach().double() * n
            if run.data.task == "classification":
                sums[1] += (out_b.argmax(1) == yb).sum()
            sums[2] += n
        if bar is not None:
            bar.update(1)
    ddp.all_reduce_sum(sums, run.dist)
    return sums, time.perf_counter() - t0


def _train_step(run: _Run, xb: torch.Tensor, yb: torch.Tensor, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward (under autocast when mixed precision), loss, backward, clipping, optimizer, scheduler, EMA."""
    amp_dtype = run.amp_dtype
    with torch.autocast(device_type=run.dev.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        out_b = run.net(xb)
    loss = run.loss_fn(out_b, yb)
    if not torch.isfinite(loss):
        raise FloatingPointError(f"loss became {float(loss)} at epoch {epoch}, step {run.step}: "
                                 "lower the learning rate or add grad_clip")
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    if run.recipe.grad_clip is not None:
        nn.utils.clip_grad_norm_(run.model.parameters(), run.recipe.grad_clip)
    run.opt.step()
    run.sched.step()
    if run.ema is not None:
        run.ema.update(run.model)
    run.step += 1
    return out_b, loss


def _train_record(run: _Run, epoch: int, sums: torch.Tensor) -> dict[str, Any]:
    record: dict[str, Any] = {"epoch": epoch, "step": run.step, "lr": run.opt.param_groups[0]["lr"],
                              "train_loss": float(sums[0] / sums[2])}
    if run.data.task == "classification":
        record["train_acc"] = float(100.0 * sums[1] / sums[2])
    return record


def _evaluate_epoch(run: _Run, record: dict[str, Any], eval_model: nn.Module | None) -> None:
    """The evaluation set's metrics (of the EMA weights when there are some) into ``record``."""
    target = run.model
    if run.ema is not None:
        run.ema.copy_to(eval_model)
        target = eval_model
    task = run.data.task
    ev = evaluate_model(target, run.data_dev.x_eval, run.data_dev.y_eval, task,
                        run.loss_fn if task == "classification" else None,
                        cert_eps=DEFAULT_CERT_EPS[0] if task == "classification" else None)
    record.update({f"eval_{k}": v for k, v in ev.items()})


def _save_checkpoint(run: _Run, epoch: int) -> None:
    recipe, ema = run.recipe, run.ema
    _atomic_torch_save({
        "recipe": recipe.to_dict(), "epoch": epoch, "step": run.step,
        "data_order": {"data_seed": recipe.data_seed, "next_epoch": epoch + 1, "next_step": run.step},
        "model": run.model.state_dict(), "normalizers": normalizer_states(run.model),
        "optimizer": run.opt.state_dict(), "scheduler": run.sched.state_dict(),
        "ema": ema.state_dict() if ema is not None else None, "rng": _rng_state(),
        "history": run.history, "world_size": run.dist.world}, run.cfg.checkpoint)


def _write_log(run: _Run) -> None:
    _atomic_text(run.cfg.out_dir / LOG, "".join(json.dumps(h, sort_keys=True) + "\n" for h in run.history))


def _finish(run: _Run, completed: bool) -> TrainResult:
    """The result; on rank 0 the plot and, for a completed run, the final metrics and the Hub export."""
    cfg, recipe = run.cfg, run.recipe
    result = TrainResult(cfg.out_dir, recipe, run.history, completed=completed,
                         state={k: v.detach().to("cpu", copy=True) for k, v in run.model.state_dict().items()})
    if run.main and cfg.plot and run.history:
        write_plot(run.history, cfg.out_dir / PLOT, title=f"{recipe.model} ({recipe.tag})")
    if run.main and completed:
        final = _copy_as(run.model, torch.float32)
        if run.ema is not None:
            run.ema.copy_to(final)
        final = final.to("cpu").eval()
        metrics = final_metrics(final, run.data, recipe)
        _atomic_text(cfg.out_dir / "metrics.json", json.dumps(metrics, indent=2, sort_keys=True) + "\n")
        result.metrics, result.model = metrics, final
        if cfg.write_hub:
            result.hub = _export_hub(run, final, metrics)
    return result


def _export_hub(run: _Run, final: nn.Module, metrics: dict[str, Any]) -> dict[str, Any]:
    """``out_dir/hub``: the final weights with their :class:`~dsnet_zoo.hub.WeightsCfg` and a card."""
    cfg, recipe, data, history = run.cfg, run.recipe, run.data, run.history
    weights = cfg.base_cfg if cfg.base_cfg is not None else WeightsCfg(
        tag=recipe.tag, architecture=recipe.model, dataset=recipe.dataset, license="MIT",
        description=(f"`{recipe.model}` trained by `dsnet-zoo train` on {recipe.dataset} "
                     f"({recipe.train_split} split, {len(data.y_train)} examples), evaluated on "
                     f"{recipe.eval_set} ({recipe.eval_split} split, {len(data.y_eval)} examples)."))
    weights = replace(weights, tag=recipe.tag, architecture=recipe.model, recipe=recipe.to_dict(),
                      metrics=metrics, model_args=dict(recipe.model_args),
                      hf_hub_id=cfg.hub_repo_id or weights.hf_hub_id or f"dsnet-zoo/{recipe.model}-{recipe.tag}",
                      input_size=tuple(data.x_train.shape[1:]),
                      num_classes=getattr(final, "num_classes", None))
    total_s = sum(h.get("seconds", 0.0) for h in history)
    card = ("## Training run\n\n"
            f"- `dsnet-zoo train {recipe.model}.{recipe.tag} --out DIR` reruns this recipe\n"
            f"- {recipe.epochs} epochs, {history[-1]['step']} steps, {total_s:.0f} s of training "
            f"on {run.dev.type} ({torch.get_num_threads()} threads, {run.dist.world} process(es)), "
            f"torch {torch.__version__}\n"
            "- bit-for-bit reruns need the same device type, thread count and library versions\n"
            f"- last epoch: `{json.dumps(history[-1], sort_keys=True)}`\n")
    return write_hub_repo(final, weights, cfg.out_dir / "hub", overwrite=True, card_extra=card)
