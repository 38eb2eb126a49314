"""The metrics of ``dsnet-zoo eval``, in a registry: each computes per-example outcomes batch by batch.

A metric declares its per-example columns (:class:`Column`); ``kind='robust'`` columns (an attack's
verdict at a norm and radius) are what the runner's cross-checks compare with the certificates, so a
new attack registered with :func:`register_metric` is checked like the built-in ones.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable

import numpy as np
import torch

from ..models.lipnet_paper import PAPER_ATTACK_EPS
from . import attacks, paper_protocol

__all__ = ["CrossCheckError", "CertifiedPointBroken", "AA_MODES", "Column", "Metric", "MetricContext", "Batch", "register_metric", "get_metric", "list_metrics",
           "format_eps", "parse_eps", "DEFAULT_CERT_EPS", "PAPER_ATTACK_EPS", "PAPER_EPS", "DEFAULT_METRICS"]

DEFAULT_CERT_EPS: tuple[float, ...] = (36 / 255, 72 / 255, 108 / 255, 255 / 255)
# The paper-pgd metric's default radii: the paper's grid without eps = 0 (clean accuracy is the 'clean'
# metric). PAPER_EPS is an alias of PAPER_ATTACK_EPS kept for the runner and dsnet_zoo.evaluation's callers;
# both are defined once, in dsnet_zoo/models/lipnet_paper.py (with PAPER_EPS_GRID, the grid including 0).
PAPER_EPS = PAPER_ATTACK_EPS
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
    """One per-example outcome. ``kind``: 'pred', 'correct', 'radius', 'certified', 'robust', 'info' (bool)
    or 'seconds' (float: measured time, kept for the summary but not an outcome, so not in the per-example
    side file, which is identical across reruns and process counts)."""

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
    # AutoAttack: "auto" = certificate-aware when the model has a bound, "full" = every correct point
    aa_mode: str = "auto"
    aa_cert_sample: int = 32  # certified points attacked per run and threat as a cross-check
    aa_channels_last: bool = False  # attacks in the channels-last layout: speed only (see run_autoattack)


@dataclass
class Batch:
    index: int
    seed: int
    x: torch.Tensor  # on ctx.device, in [0, 1]
    y: torch.Tensor
    logits: torch.Tensor
    radii: dict[str, torch.Tensor]
    start: int = 0  # position of the batch's first example in the evaluated set


class Metric:
    name: str = ""

    def columns(self, ctx: MetricContext) -> list[Column]:
        raise NotImplementedError

    def setup(self, ctx: MetricContext) -> dict[str, Any]:
        """Check that the metric can run and return what to record (settings, package versions)."""
        return {}

    # True: the runner calls prepare() with every example's certified radius before the first batch
    needs_certificates_upfront = False

    def prepare(self, ctx: MetricContext, radius: np.ndarray, correct: np.ndarray) -> None:
        """See ``needs_certificates_upfront``: the whole set's radii (float64) and clean correctness."""

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


AA_MODES = ("auto", "full")


class CrossCheckError(AssertionError):
    """Per-example outcomes contradict each other: a certified point was broken by an attack (the
    Lipschitz bound is wrong or there is a bug), or a point is robust but misclassified."""


class CertifiedPointBroken(CrossCheckError):
    """A point the certificate proves robust was broken by AutoAttack: the bound is wrong (or a bug)."""


@register_metric("autoattack")
class AutoAttackMetric(Metric):
    """Standard AutoAttack at each threat model (default: L2 0.5, L2 36/255, Linf 8/255).

    Certificate-aware (``aa_mode='auto'`` and a model with a provable bound): a correct point whose
    certified L2 radius exceeds the threat's reach (``eps`` for L2, ``sqrt(d) eps`` for Linf, since
    ``||delta||_2 <= sqrt(d) ||delta||_inf``) cannot be broken, so AutoAttack runs only on the correct
    points that are not certified; misclassified points are never robust (standard AutoAttack skips them
    too). As a cross-check, ``aa_cert_sample`` certified points per run and threat (drawn with a seeded
    generator from all certified points of the set, whatever the batch size, process count or resumption)
    are attacked as well; breaking any of them raises :class:`CertifiedPointBroken` (a :class:`CrossCheckError` for the
    runner: no result is written). The robust accuracy is the number standard AutoAttack gives on all
    points, provided the certificate holds (which the sample checks): standard AutoAttack cannot break a
    certified point either. Recorded per threat: points attacked, certified points skipped, the sample,
    attack seconds, and the seconds saved, estimated from the measured time per sampled certified point
    (certified points are the expensive ones: they survive all four attacks).
    """

    def columns(self, ctx):
        cols = []
        for norm, eps in ctx.aa_threats:
            key = f"autoattack/{norm}/{format_eps(eps)}"
            cols.append(Column(key, "robust", norm=norm, eps=eps))
            cols.append(Column(key + "/invalid", "info", norm=norm, eps=eps))
            cols.append(Column(key + "/skipped", "info", norm=norm, eps=eps))
            cols.append(Column(key + "/sampled", "info", norm=norm, eps=eps))
            cols.append(Column(key + "/seconds", "seconds", norm=norm, eps=eps))
        return cols

    def certificate_aware(self, ctx) -> bool:
        return ctx.aa_mode == "auto" and ctx.bound_info.get("bound") is not None

    def setup(self, ctx):
        if ctx.aa_mode not in AA_MODES:
            raise ValueError(f"aa_mode must be one of {AA_MODES}, got {ctx.aa_mode!r}")
        if ctx.aa_cert_sample < 1:
            raise ValueError(f"aa_cert_sample must be at least 1, got {ctx.aa_cert_sample}")
        self.backend = attacks.autoattack_backend()
        self.flags: list[str] = []
        rec = {"package": self.backend.package, "package_version": self.backend.version,
               "aa_version": "standard", "attacks": list(attacks.STANDARD_ATTACKS),
               "settings": "APGD-CE 1 restart x 100 it; APGD-T and FAB-T 9 target classes; Square 5,000 queries",
               "threats": [f"{n}:{format_eps(e)}" for n, e in ctx.aa_threats], "seed": ctx.seed}
        if self.certificate_aware(ctx):
            rec["mode"] = "certificate-aware"
            rec["cross_check_sample_per_threat"] = ctx.aa_cert_sample
        else:
            rec["mode"] = "full"
        return rec

    needs_certificates_upfront = True

    @staticmethod
    def _reach(ctx, norm: str, eps: float) -> float:
        """The L2 radius that covers the threat ball (``||delta||_2 <= sqrt(d) ||delta||_inf``)."""
        return eps if norm == "L2" else eps * math.sqrt(ctx.input_dim)

    def prepare(self, ctx, radius, correct):
        self.sample: dict[int, np.ndarray] = {}
        self.certified_upfront: dict[int, np.ndarray] = {}
        if not self.certificate_aware(ctx):
            return
        for t, (norm, eps) in enumerate(ctx.aa_threats):
            certified = correct & (radius > self._reach(ctx, norm, eps))
            idx = np.flatnonzero(certified)
            rng = np.random.default_rng([ctx.seed, t])
            self.sample[t] = np.sort(rng.choice(idx, size=min(len(idx), ctx.aa_cert_sample), replace=False))
            self.certified_upfront[t] = certified

    def _attack(self, ctx, x, y, norm, eps, seed):
        t = time.perf_counter()
        res = attacks.run_autoattack(ctx.model, x, y, norm=norm, eps=eps, seed=seed, device=ctx.device, backend=self.backend,
                                     channels_last=ctx.aa_channels_last)
        self.flags.extend(m for m in res["flags"] if m not in self.flags)
        return res["robust"].numpy(), res["invalid"].numpy(), time.perf_counter() - t

    def run_batch(self, ctx, batch):
        out = {}
        n = len(batch.x)
        correct = (batch.logits.argmax(1) == batch.y).cpu().numpy()
        radius = batch.radii["radius"].cpu().numpy()
        aware = self.certificate_aware(ctx)
        for t, (norm, eps) in enumerate(ctx.aa_threats):
            key = f"autoattack/{norm}/{format_eps(eps)}"
            robust = np.zeros(n, dtype=bool)
            invalid = np.zeros(n, dtype=bool)
            skipped = np.zeros(n, dtype=bool)
            sampled = np.zeros(n, dtype=bool)
            seconds = np.zeros(n, dtype=np.float64)
            if aware:
                reach = self._reach(ctx, norm, eps)
                certified = correct & (radius > reach)
                where = np.arange(batch.start, batch.start + n)
                if not np.array_equal(certified, self.certified_upfront[t][where]):
                    raise RuntimeError(f"batch {batch.index}: the certificates differ from the ones computed before "
                                       "the run (the model is not deterministic?); rerun with aa_mode='full'")
                sampled = np.isin(where, self.sample[t])
                pick = np.flatnonzero(sampled)
                skipped = certified & ~sampled
                robust[certified] = True
                groups = [np.flatnonzero(correct & ~certified), pick]
            else:
                groups = [np.arange(n)]
            for g, idx in enumerate(groups):
                if len(idx) == 0:
                    continue
                # the same seed as a full run of this batch: the attack's randomness is per batch and threat
                r, inv, sec = self._attack(ctx, batch.x[idx], batch.y[idx], norm, eps, batch.seed)
                invalid[idx] = inv
                seconds[idx] = sec / len(idx)
                if aware and g == 1:
                    if not r.all():
                        bad = idx[~r]
                        raise CertifiedPointBroken(
                            f"AutoAttack ({norm}, eps={format_eps(eps)}) broke {len(bad)} certified point(s) in batch "
                            f"{batch.index} (positions {bad.tolist()[:10]} in the batch, certified L2 radii "
                            f"{[float(radius[i]) for i in bad[:10]]} > reach {reach:.6g}): the Lipschitz bound is "
                            "understated or the certificate has a bug")
                else:
                    robust[idx] = r
            out[key] = robust
            out[key + "/invalid"] = invalid
            out[key + "/skipped"] = skipped
            out[key + "/sampled"] = sampled
            out[key + "/seconds"] = seconds
        return out

    def summarize(self, ctx, table, record):
        out = super().summarize(ctx, table, record)
        out["invalid_points"] = {}
        out["cost"] = {}
        for norm, eps in ctx.aa_threats:
            name = f"{norm}:{format_eps(eps)}"
            key = f"autoattack/{norm}/{format_eps(eps)}"
            out["invalid_points"][name] = int(np.sum(table[key + "/invalid"]))
            seconds = table[key + "/seconds"]
            skipped, sampled = table[key + "/skipped"], table[key + "/sampled"]
            attacked = ~skipped & ~sampled & table["clean/correct"].astype(bool)
            sample_s = float(np.sum(seconds[sampled]))
            n_sampled = int(np.sum(sampled))
            cost = {"attacked": int(np.sum(attacked)), "certified_skipped": int(np.sum(skipped)),
                    "certified_sampled": n_sampled, "attack_seconds": round(float(np.sum(seconds)), 3),
                    "sample_seconds": round(sample_s, 3)}
            if record.get("mode") == "certificate-aware":
                cost["estimated_seconds_saved"] = (round(sample_s / n_sampled * int(np.sum(skipped)), 3)
                                                   if n_sampled else None)
                cost["saving_estimate"] = "certified points skipped x measured seconds per sampled certified point"
            out["cost"][name] = cost
        return out


@register_metric("paper-pgd")
class PaperPGDMetric(Metric):
    """The paper's protocol: Foolbox ``L2PGD(steps=10)`` with its defaults, on the paper's eps grid.

    Runs :func:`dsnet_zoo.evaluation.paper_protocol.paper_pgd_outcomes` (Foolbox imported when used)."""

    def columns(self, ctx):
        return [Column(f"paper-pgd/L2/{format_eps(e)}", "robust", norm="L2", eps=e) for e in ctx.paper_eps]

    def setup(self, ctx):
        try:
            import foolbox  # the optional `eval` extra: imported only when this metric runs
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
