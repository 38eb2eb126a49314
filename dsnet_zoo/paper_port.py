"""Convert the paper authors' released CIFAR-10 checkpoints into Hub-ready repo folders.

``port_paper(src, out)`` reads the nine ``.pt`` state dicts (``<src>/cifar10/<variant>_margin_<m>.pt``,
see ``DSNET_ZOO_PAPER_WEIGHTS``), checks each is the released file (sha256), loads it strictly into our
port (:mod:`dsnet_zoo.models.lipnet_paper`) through the key mapping, and writes
``<out>/<hf_hub_id>/{model.safetensors, config.json, README.md}``: the layout ``DSNET_ZOO_WEIGHTS_DIR``
and ``snapshot_download(local_dir=...)`` use, so ``create('<arch>.<tag>', pretrained=True)`` finds them.

The conversion is deterministic (sorted keys, contiguous float32 tensors, fixed safetensors metadata,
JSON with sorted keys, no timestamps): the same source gives the same bytes, which is what lets the
registry pin each converted file's sha256. The authors' repository has no license file, so the folders
are build outputs for local use: never commit or publish them.
"""
from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import torch

from ._api import create
from .hub import WeightsCfg, WeightsError, load_into_model, sha256_file, write_hub_repo
from .models import lipnet_paper as lp
from .registry import get_pretrained_cfg

__all__ = ["PaperCheckpoint", "paper_checkpoints", "find_paper_dir", "load_paper_checkpoint",
           "port_paper", "write_paper_repo", "paper_card_extra"]

PAPER_WEIGHTS_ENV = "DSNET_ZOO_PAPER_WEIGHTS"


@dataclass(frozen=True)
class PaperCheckpoint:
    variant: str
    margin: str
    arch: str
    tag: str
    filename: str  # inside <src>/cifar10
    source_sha256: str

    @property
    def name(self) -> str:
        return f"{self.arch}.{self.tag}"

    @property
    def cfg(self) -> WeightsCfg:
        return get_pretrained_cfg(self.name)

    def paper_robust_accuracy(self) -> tuple[float, ...]:
        return lp._PAPER_ROBUST_ACC[(self.variant, self.margin)]


def paper_checkpoints(filter: str | Iterable[str] = "") -> list[PaperCheckpoint]:
    """The nine released checkpoints, optionally filtered by shell patterns on ``arch.tag``."""
    pats = [filter] if isinstance(filter, str) else list(filter)
    pats = [p for p in pats if p]
    out = []
    for v in lp.PAPER_VARIANTS:
        for m in lp._MARGINS:
            c = PaperCheckpoint(v, m, lp._ARCH[v], lp.paper_tag(m), lp.paper_source_file(v, m),
                                lp._SOURCE_SHA256[(v, m)])
            if not pats or any(fnmatch.fnmatchcase(c.name, p) or fnmatch.fnmatchcase(c.arch, p) for p in pats):
                out.append(c)
    return out


def find_paper_dir(src: str | os.PathLike | None = None) -> Path:
    """The folder holding the ``.pt`` files: ``src`` (or ``$DSNET_ZOO_PAPER_WEIGHTS``) or its ``cifar10/``."""
    if src is None:
        src = os.environ.get(PAPER_WEIGHTS_ENV)
        if not src:
            raise WeightsError(f"no source folder: pass --src DIR or set {PAPER_WEIGHTS_ENV}")
    src = Path(src).expanduser()
    if not src.is_dir():
        raise WeightsError(f"paper weights folder {src} does not exist")
    for d in (src / "cifar10", src):
        if any((d / c.filename).is_file() for c in paper_checkpoints()):
            return d
    raise WeightsError(f"{src} holds none of the paper's checkpoints (expected e.g. "
                       f"{src / 'cifar10' / paper_checkpoints()[0].filename})")


def load_paper_checkpoint(ckpt: PaperCheckpoint, src: str | os.PathLike | None = None, *,
                          verify_source: bool = True):
    """Our port of ``ckpt`` with the authors' weights loaded strictly from the original ``.pt`` file."""
    path = find_paper_dir(src) / ckpt.filename
    if not path.is_file():
        raise WeightsError(f"missing paper checkpoint {path} (expected the released file {ckpt.filename})")
    if verify_source:
        digest = sha256_file(path)
        if digest != ckpt.source_sha256:
            raise WeightsError(f"{path} has sha256 {digest}, not the released {ckpt.source_sha256}: it is not "
                               "the authors' checkpoint, so it is not labelled as theirs. Use the released file.")
    sd = torch.load(str(path), map_location="cpu", weights_only=True)
    if not isinstance(sd, dict):
        raise WeightsError(f"{path} is not a state dict")
    model = create(ckpt.name, pretrained=False)
    load_into_model(model, lp.map_paper_state_dict(sd), what=str(path))
    return model.eval()


def paper_card_extra(cfg: WeightsCfg) -> str:
    """The sections a converted checkpoint's card adds to the weights card: whose weights they are, their
    license status, how to load the folder and the authors' own numbers."""
    m = cfg.metrics.get("paper", {})
    rows = "\n".join(f"| {e:.4f} | {a * 100:.2f} |" for e, a in zip(m.get("eps", []), m.get("robust_accuracy", [])))
    return f"""## The paper authors' weights

These are **the authors' own weights**, not trained by dsnet_zoo: the checkpoint released with
Celledoni, Murari, Owren, Schönlieb, Sherry, "Dynamical systems' based neural networks"
(SIAM J. Sci. Comput. 2023), converted to safetensors with our key names and nothing else changed.

- License status: {cfg.license}.
  The authors' repository has no license file, so this folder is for local use only: do not commit or
  upload it.
- Architecture: `{cfg.architecture}` in `dsnet_zoo/models/lipnet_paper.py` (our own code, matching the
  authors' forward pass), with the normalisation the authors' evaluation used inside the model.
- **Not 1-Lipschitz**: see `docs/paper_port.md` for the certified pixel-space bound and why.

## Load

```python
# DSNET_ZOO_WEIGHTS_DIR=<the folder given to `dsnet-zoo port-paper --out`>
import dsnet_zoo
model = dsnet_zoo.create("{cfg.name}", pretrained=True)
```

## The authors' numbers

Robust accuracy (%) reported by the authors: Foolbox 3.3.3 `L2PGD(steps=10)`, first 1,024 CIFAR-10 test
images, L2 radius eps in pixel space (eps = 0 is clean accuracy).

| eps | robust accuracy |
|---|---|
{rows}
"""


def write_paper_repo(model, cfg: WeightsCfg, out_dir: str | os.PathLike, *,
                     provenance: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``<out_dir>/<cfg.hf_hub_id>/`` (model.safetensors, config.json, README.md) with the one Hub
    writer, :func:`dsnet_zoo.hub.write_hub_repo`, replacing the files of an earlier conversion.
    Returns its ``{'path', 'sha256', 'cfg', 'files'}``."""
    if not cfg.hf_hub_id or "/" not in cfg.hf_hub_id:
        raise ValueError(f"{cfg.name} needs an hf_hub_id of the form org/name, got {cfg.hf_hub_id!r}")
    return write_hub_repo(model, cfg, Path(out_dir) / cfg.hf_hub_id, overwrite=True,
                          card_extra=paper_card_extra(cfg), provenance=provenance)


def port_paper(src: str | os.PathLike | None, out: str | os.PathLike, *, filter: str | Iterable[str] = "",
               check_registered: bool = True) -> list[dict[str, Any]]:
    """Convert the released checkpoints matching ``filter`` into ``<out>/<hf_hub_id>/`` folders.

    With ``check_registered`` (the default) a converted file whose sha256 differs from the one the
    registry pins is an error (the folder is still written, so it can be inspected).
    """
    ckpts = paper_checkpoints(filter)
    if not ckpts:
        raise ValueError(f"no paper checkpoint matches {filter!r}; names: "
                         + ", ".join(c.name for c in paper_checkpoints()))
    src_dir = find_paper_dir(src)
    missing = [c.filename for c in ckpts if not (src_dir / c.filename).is_file()]
    if missing:
        raise WeightsError(f"{src_dir} lacks {', '.join(missing)}: copy the released checkpoints there")
    results = []
    for c in ckpts:
        model = load_paper_checkpoint(c, src_dir)
        cfg = c.cfg
        info = write_paper_repo(model, cfg, out, provenance={
            "source_file": c.filename, "source_sha256": c.source_sha256,
            "conversion": "key renaming only (dsnet_zoo.models.lipnet_paper.map_paper_state_dict)"})
        info.update(name=c.name, registered_sha256=cfg.sha256,
                    matches_registry=cfg.sha256 is not None and info["sha256"] == cfg.sha256)
        results.append(info)
    if check_registered:
        bad = [r for r in results if not r["matches_registry"]]
        if bad:
            raise WeightsError("converted files differ from the sha256 the registry pins: " + "; ".join(
                f"{r['name']}: {r['sha256']} (registered {r['registered_sha256']})" for r in bad)
                + ". A different torch/safetensors serialisation? Inspect the folders written.")
    return results
