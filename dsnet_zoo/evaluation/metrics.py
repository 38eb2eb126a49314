"""The metrics of ``dsnet-zoo eval``, in a registry: each computes per-example outcomes batch by batch.

A metric declares its per-example columns (:class:`Column`); ``kind='robust'`` columns (an attack's
verdict at a norm and radius) are what the runner's cross-checks compare with the certificates, so a
new attack registered with :func:`register_metric` is checked like the built-in ones.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable

import numpy as np
import torch

__all__ = ["Column", "Metric", "MetricContext", "Batch", "register_metric", "get_metric", "list_metrics",
           "format_eps", "parse_eps", "DEFAULT_CERT_EPS", "PAPER_EPS", "DEFAULT_METRICS"]

DEFAULT_CERT_EPS: tuple[float, ...] = (36 / 255, 72 / 255, 108 / 255, 255 / 255)
# the paper's grid (its robust_acc files: eps = 0 is clean accuracy, listed separately here)
PAPER_EPS: tuple[float, ...] = (8 / 255, 16 / 255, 36 / 255, 0.3, 0.5, 0.6, 0.8, 1.0)
DEFAULT_METRICS = ("clean", "certified")


def format_eps(eps: float) -> str:
    """``36/255`` when ``eps`` is a whole number of 255ths (other than the short decimals), else ``0.5``."""
    k = eps * 255
    short = f"{eps:.6g}"
    if abs(k - round(k)) < 1e-9 and round(k) > 0 and len(short) > 4:
        return f"{int(round(k))}/255"
    return short


def parse_eps(text: str) -> float:
    """``'36/255'``, ``'0.5'`` or ``'1'`` -> float."""
    try:
        value = float(Fraction(text.strip()))
    except (ValueError, ZeroDivisionError) as e:
        raise ValueError(f"cannot read eps {text!r}: write a number or a fraction such as 36/255") from e
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"eps must be positive, got {text!r}")
    return value


@dataclass(frozen=True)
class Column:
    """One per-example outcome. ``kind``: 'pred', 'correct', 'radius', 'certified', 'robust' or 'info'."""

    name: str
    kind: str
    norm: str | None = None
    eps: float | None = None


@dataclass
class MetricContext:
    model: torch.nn.Module
    device: torch.device
    dtype: torch.dtype
    seed: int
    num_classes: int
    input_dim: int
    cert_eps: tuple[float, ...]
    paper_eps: tuple[float, ...]
    aa_threats: tuple[tuple[str, float], ...]
    bound_info: dict[str, Any]


@dataclass
class Batch:
    index: int
    seed: int
    x: torch.Tensor  # on ctx.device, in [0, 1]
    y: torch.Tensor
    logits: torch.Tensor
    radii: dict[str, torch.Tensor]


class Metric:
    name: str = ""

    def columns(self, ctx: MetricContext) -> list[Column]:
        raise NotImplementedError

    def setup(self, ctx: MetricContext) -> dict[str, Any]:
        """Check that the metric can run and return what to record (settings, package versions)."""
        return {}

    def run_batch(self, ctx: MetricContext, batch: Batch) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def summarize(self, ctx: MetricContext, table: dict[str, np.ndarray], record: dict[str, Any]) -> dict[str, Any]:
        """Aggregate numbers from the merged per-example table."""
        out = dict(record)
        for col in self.columns(ctx):
            if col.kind in ("robust", "certified"):
                out.setdefault("accuracy", {})
                key = f"{col.norm}:{format_eps(col.eps)}"
                values = table[col.name]
                out["accuracy"][key] = None if values.dtype == object else float(np.mean(values))
        return out


_METRICS: dict[str, Callable[[], Metric]] = {}


def register_metric(name: str) -> Callable:
    """Class decorator: make ``name`` usable in ``--metrics``. Names must be unique."""

    def deco(cls):
        if name in _METRICS:
            raise ValueError(f"metric {name!r} is already registered")
        cls.name = name
        _METRICS[name] = cls
        return cls

    return deco


def get_metric(name: str) -> Metric:
    if name not in _METRICS:
        raise ValueError(f"unknown metric {name!r}; known: {', '.join(list_metrics())}")
    return _METRICS[name]()


def list_metrics() -> list[str]:
    return list(_METRICS)


@register_metric("clean")
class CleanAccuracy(Metric):
    def columns(self, ctx):
        return [Column("clean/pred", "pred"), Column("clean/correct", "correct")]

    def run_batch(self, ctx, batch):
        pred = batch.logits.argmax(1)
        return {"clean/pred": pred.cpu().numpy().astype(np.int64),
                "clean/correct": (pred == batch.y).cpu().numpy()}

    def summarize(self, ctx, table, record):
        return {**record, "accuracy": float(np.mean(table["clean/correct"]))}


@register_metric("certified")
class CertifiedAccuracy(Metric):
    """Certified L2 accuracy at each eps: radius > eps (see :mod:`dsnet_zoo.evaluation.certify`).
    Models without a bound get ``None`` (not 0): nothing is claimed."""

    def columns(self, ctx):
        cols = [Column("certified/radius", "radius", norm="L2")]
        cols += [Column(f"certified/L2/{format_eps(e)}", "certified", norm="L2", eps=e) for e in ctx.cert_eps]
        return cols

    def setup(self, ctx):
        return {"eps": [format_eps(e) for e in ctx.cert_eps], "norm": "L2",
                "certificate": ctx.bound_info.get("certificate")}

    def run_batch(self, ctx, batch):
        r = batch.radii["radius"].cpu().numpy()
        has = ctx.bound_info.get("bound") is not None
        out = {"certified/radius": r}
        for e in ctx.cert_eps:
            out[f"certified/L2/{format_eps(e)}"] = (r > e) if has else np.full(len(r), None, dtype=object)
        return out

    def summarize(self, ctx, table, record):
        out = super().summarize(ctx, table, record)
        r = table["certified/radius"]
        if ctx.bound_info.get("bound") is None:
            out["median_radius"] = None
        else:
            out["median_radius"] = float(np.median(r.astype(np.float64)))
        return out


@register_metric("autoattack")
class AutoAttackMetric(Metric):
    """Standard AutoAttack at each threat model (default: L2 0.5, L2 36/255, Linf 8/255)."""

    def columns(self, ctx):
        cols = []
        for norm, eps in ctx.aa_threats:
            cols.append(Column(f"autoattack/{norm}/{format_eps(eps)}", "robust", norm=norm, eps=eps))
            cols.append(Column(f"autoattack/{norm}/{format_eps(eps)}/invalid", "info", norm=norm, eps=eps))
        return cols

    def setup(self, ctx):
        from .attacks import STANDARD_ATTACKS, autoattack_backend

        self.backend = autoattack_backend()
        self.flags: list[str] = []
        return {"package": self.backend.package, "package_version": self.backend.version,
                "aa_version": "standard", "attacks": list(STANDARD_ATTACKS),
                "settings": "APGD-CE 1 restart x 100 it; APGD-T and FAB-T 9 target classes; Square 5,000 queries",
                "threats": [f"{n}:{format_eps(e)}" for n, e in ctx.aa_threats], "seed": ctx.seed}

    def run_batch(self, ctx, batch):
        from .attacks import run_autoattack

        out = {}
        for norm, eps in ctx.aa_threats:
            res = run_autoattack(ctx.model, batch.x, batch.y, norm=norm, eps=eps, seed=batch.seed,
                                 device=ctx.device, backend=self.backend)
            key = f"autoattack/{norm}/{format_eps(eps)}"
            out[key] = res["robust"].numpy()
            out[key + "/invalid"] = res["invalid"].numpy()
            self.flags.extend(m for m in res["flags"] if m not in self.flags)
        return out

    def summarize(self, ctx, table, record):
        out = super().summarize(ctx, table, record)
        out["invalid_points"] = {f"{n}:{format_eps(e)}": int(np.sum(table[f"autoattack/{n}/{format_eps(e)}/invalid"]))
                                 for n, e in ctx.aa_threats}
        return out


@register_metric("paper-pgd")
class PaperPGDMetric(Metric):
    """The paper's protocol: Foolbox ``L2PGD(steps=10)`` with its defaults, on the paper's eps grid.

    Runs :func:`dsnet_zoo.evaluation.paper_protocol.paper_pgd_outcomes` (imported when used)."""

    def columns(self, ctx):
        return [Column(f"paper-pgd/L2/{format_eps(e)}", "robust", norm="L2", eps=e) for e in ctx.paper_eps]

    def setup(self, ctx):
        from . import paper_protocol

        try:
            import foolbox
        except ImportError as e:
            raise RuntimeError("metric 'paper-pgd' needs Foolbox: pip install 'dsnet_zoo[eval]'") from e
        self.protocol = paper_protocol

        return {"attack": "foolbox.attacks.L2PGD(steps=10), defaults", "foolbox": foolbox.__version__,
                "eps": [format_eps(e) for e in ctx.paper_eps], "seed": ctx.seed}

    def run_batch(self, ctx, batch):
        res = self.protocol.paper_pgd_outcomes(ctx.model, batch.x, batch.y, list(ctx.paper_eps),
                                               batch_size=len(batch.x), device=ctx.device, seed=batch.seed)
        out = {}
        for e in ctx.paper_eps:
            match = [k for k in res if abs(float(k) - e) <= 1e-9 * max(1.0, e)]
            if len(match) != 1:
                raise RuntimeError(f"paper_pgd_outcomes returned eps {sorted(res)}, not {e}")
            robust = torch.as_tensor(res[match[0]]).to(torch.bool).cpu().numpy()
            if robust.shape != (len(batch.x),):
                raise RuntimeError(f"paper_pgd_outcomes gave shape {robust.shape} for {len(batch.x)} examples")
            out[f"paper-pgd/L2/{format_eps(e)}"] = robust
        return out
