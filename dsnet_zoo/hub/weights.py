"""Everything about weights: their metadata, where they come from, how they are checked and loaded.

Resolution order for ``create(name, pretrained=True)`` (first match wins):

1. ``checkpoint_path`` given by the caller (``.safetensors``, or ``.pt``/``.pth`` read with
   ``torch.load(weights_only=True)``);
2. each folder of ``DSNET_ZOO_WEIGHTS_DIR`` (``os.pathsep``-separated), laid out as Hugging Face
   repos: ``<dir>/<org>/<name>/<filename>`` (what ``snapshot_download(local_dir=...)`` or
   ``dsnet-zoo publish``/``port-paper`` write);
3. the ``hub/`` folder of a source checkout, same layout (the zoo's own committed weights);
4. the Hugging Face Hub through ``huggingface_hub.hf_hub_download`` at the pinned revision
   (its cache, ``HF_ENDPOINT``, ``HF_HUB_OFFLINE`` and ``HF_HOME`` are honoured).

Whatever the source, a registered tag's file is hashed and compared with its recorded sha256
before a single tensor is read, and the state dict is loaded strictly.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file

__all__ = [
    "WeightsCfg",
    "WeightsError",
    "ChecksumError",
    "resolve_weights_file",
    "load_state_dict_file",
    "load_weights",
    "sha256_file",
    "checkout_hub_dir",
]

CITATION_PAPER = (
    "@article{celledoni2023dynamical,\n"
    "  title={Dynamical systems' based neural networks},\n"
    "  author={Celledoni, Elena and Murari, Davide and Owren, Brynjulf and "
    "Sch{\\\"o}nlieb, Carola-Bibiane and Sherry, Ferdia},\n"
    "  journal={SIAM Journal on Scientific Computing},\n"
    "  volume={45}, number={6}, pages={A3071--A3094}, year={2023}\n}"
)

WEIGHTS_DIR_ENV = "DSNET_ZOO_WEIGHTS_DIR"


class WeightsError(RuntimeError):
    """Weights could not be found, downloaded, verified or loaded. The message says what to do."""


class ChecksumError(WeightsError):
    """A weights file whose sha256 differs from the one on record."""


@dataclass(frozen=True)
class WeightsCfg:
    """One tagged set of pretrained weights and everything known about it.

    Like torchvision's ``Weights``, the metadata travels with the weights: what data they were
    trained on, how, under which license, what the model expects as input and what was measured.
    Inputs are always images in ``input_range`` (``[0, 1]``); the normalisation with
    ``norm_mean``/``norm_std`` happens inside the model, so a Lipschitz bound of the model is a bound
    in pixel space and the input transform is only ``ToTensor()`` (timm's view of the cfg,
    :meth:`timm_pretrained_cfg`, says ``mean=(0, 0, 0)``, ``std=(1, 1, 1)`` for that reason).
    """

    tag: str
    hf_hub_id: str | None = None
    revision: str | None = None
    filename: str = "model.safetensors"
    sha256: str | None = None
    architecture: str | None = None  # set by the registry
    num_classes: int | None = None
    input_size: tuple[int, ...] = (3, 32, 32)
    input_range: tuple[float, float] = (0.0, 1.0)
    norm_mean: tuple[float, ...] = (0.0, 0.0, 0.0)  # normalisation applied inside the model
    norm_std: tuple[float, ...] = (1.0, 1.0, 1.0)
    dataset: str | None = None
    label_names: tuple[str, ...] | None = None
    recipe: Mapping[str, Any] | None = None
    license: str | None = None
    citation: str = CITATION_PAPER
    source: str = "dsnet_zoo"  # who produced the weights: "dsnet_zoo" or "paper-authors"
    origin: str | None = None  # where the file comes from (a URL, a path in a repo)
    description: str = ""
    model_args: Mapping[str, Any] = field(default_factory=dict)
    metrics: Mapping[str, Any] = field(default_factory=dict)
    num_params: int | None = None

    @property
    def has_weights(self) -> bool:
        return bool(self.hf_hub_id)

    @property
    def name(self) -> str:
        return f"{self.architecture}.{self.tag}" if self.architecture else self.tag

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k, v in d.items():
            if isinstance(v, tuple):
                d[k] = list(v)
        d["recipe"] = dict(self.recipe) if self.recipe is not None else None
        d["model_args"] = dict(self.model_args)
        d["metrics"] = json.loads(json.dumps(dict(self.metrics)))
        return d

    def timm_pretrained_cfg(self) -> dict[str, Any]:
        """The cfg as timm reads it (``pretrained_cfg`` in ``config.json``), plus our own keys."""
        d = self.to_dict()
        d.update(mean=[0.0] * self.input_size[0], std=[1.0] * self.input_size[0], crop_pct=1.0,
                 interpolation="bilinear", fixed_input_size=True)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "WeightsCfg":
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        for k in ("input_size", "input_range", "norm_mean", "norm_std", "label_names"):
            if kw.get(k) is not None:
                kw[k] = tuple(kw[k])
        return cls(**kw)


# ----------------------------------------------------------------------------------------------
# hashing and files


def sha256_file(path: str | os.PathLike, chunk_size: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk_size)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def checkout_hub_dir() -> Path | None:
    """The ``hub/`` folder of a source checkout (editable install or ``torch.hub`` clone), if any."""
    d = Path(__file__).resolve().parents[2] / "hub"
    return d if d.is_dir() else None


def _weights_dirs() -> list[Path]:
    raw = os.environ.get(WEIGHTS_DIR_ENV, "")
    dirs = [Path(p).expanduser() for p in raw.split(os.pathsep) if p.strip()]
    hub = checkout_hub_dir()
    if hub is not None:
        dirs.append(hub)
    return dirs


def _local_repo_file(cfg: WeightsCfg) -> Path | None:
    for d in _weights_dirs():
        candidate = d / cfg.hf_hub_id / cfg.filename
        if candidate.is_file():
            return candidate
    return None


# The one retry policy for talking to the Hub: a transient failure (5xx, 429, refused or cut connection,
# timeout) is retried DOWNLOAD_ATTEMPTS times in all, waiting DOWNLOAD_BACKOFF_S * 2**k between attempts;
# anything else fails at once with a message saying what to do. huggingface_hub's own metadata retries
# (5 more per call, up to 8 s apart) are kept out of it: the metadata request is made here, without them,
# before hf_hub_download runs.
DOWNLOAD_ATTEMPTS = 3
PAPER_SOURCE = "paper-authors"  # WeightsCfg.source of the tags converted by `dsnet-zoo port-paper`
PAPER_WEIGHTS_URL = "https://github.com/davidemurari/StructuredNeuralNetworks"
DOWNLOAD_BACKOFF_S = 0.5


def _check_repo_id(repo_id: str) -> None:
    # huggingface_hub is imported only where the Hub is used: 0.04 s (errors) to 0.6 s (cards) on import
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as e:
        raise WeightsError(f"{repo_id!r} is not a Hub repository id: write ORG/NAME (letters, digits, '-', '_', "
                           f"'.'), e.g. 'hf-hub:dsnet-zoo/lipnet_cifar10', optionally with @REVISION. ({e})") from None


def _hf_download(repo_id: str, filename: str, revision: str | None, *, attempts: int = DOWNLOAD_ATTEMPTS,
                 backoff: float = DOWNLOAD_BACKOFF_S, force_download: bool = False) -> Path:
    """``hf_hub_download`` under the zoo's retry policy (see ``DOWNLOAD_ATTEMPTS``), with messages that say
    what to do. Offline (``HF_HUB_OFFLINE``) or with the Hub unreachable, a copy in the Hugging Face cache
    is used when there is one."""
    try:  # lazy: the download half of huggingface_hub takes 0.17 s to import, and most programs never download
        from huggingface_hub import constants, get_hf_file_metadata, hf_hub_download, hf_hub_url, \
            try_to_load_from_cache
        from huggingface_hub.errors import (EntryNotFoundError, HfHubHTTPError, LocalEntryNotFoundError,
                                            RepositoryNotFoundError, RevisionNotFoundError)
    except ImportError as e:  # pragma: no cover - huggingface_hub is a hard dependency
        raise WeightsError("huggingface_hub is needed to download weights: pip install huggingface_hub") from e

    _check_repo_id(repo_id)
    where = f"{repo_id}/{filename} at revision {revision or 'main'}"
    last: Exception | None = None
    for attempt in range(attempts):
        if attempt:
            time.sleep(backoff * (2 ** (attempt - 1)))
        try:
            if not constants.HF_HUB_OFFLINE:
                # the metadata request first, without huggingface_hub's retries: an unreachable Hub or a
                # missing repo is known in one round trip
                get_hf_file_metadata(hf_hub_url(repo_id, filename, revision=revision), retry_on_errors=False)
            return Path(hf_hub_download(repo_id, filename, revision=revision, force_download=force_download))
        except RepositoryNotFoundError as e:
            raise WeightsError(
                f"the Hub has no repository {repo_id!r} (looked for {where}; a private repo needs a token, "
                f"see `hf auth login`). Check the name and HF_ENDPOINT, or put a local copy in "
                f"{WEIGHTS_DIR_ENV}.") from None
        except RevisionNotFoundError:
            raise WeightsError(
                f"repository {repo_id!r} has no revision {revision!r}: the pinned weights are not on this "
                f"server. Point HF_ENDPOINT at a mirror that has them, or use {WEIGHTS_DIR_ENV}.") from None
        except LocalEntryNotFoundError as e:  # before EntryNotFoundError: a subclass of it in 2.x
            if not constants.HF_HUB_OFFLINE and _transient_cause(e):
                last = e  # hf_hub_download's own metadata request failed after ours had passed
                continue
            raise WeightsError(
                f"{where} is not in the local Hugging Face cache and could not be downloaded (HF_HUB_OFFLINE, "
                f"or no network). "
                f"Download it once online, or set {WEIGHTS_DIR_ENV} to a folder holding "
                f"{repo_id}/{filename}.") from None
        except EntryNotFoundError:
            raise WeightsError(f"the Hub repository {repo_id!r} has no file {filename!r} at revision "
                               f"{revision or 'main'}.") from None
        except HfHubHTTPError as e:
            status = getattr(getattr(e, "response", None), "status_code", None)
            if status is not None and status < 500 and status not in (408, 429):
                raise WeightsError(f"downloading {where} failed with HTTP {status}: {e}") from None
            last = e
        except (*_transport_errors(), OSError) as e:  # refused, reset, cut mid-body, timeouts
            last = e
    cached = try_to_load_from_cache(repo_id, filename, revision=revision)
    if isinstance(cached, str) and not force_download and _is_connection_error(last):
        return Path(cached)  # the Hub is unreachable but this file was downloaded before
    kind = "the Hub cannot be reached" if _is_connection_error(last) else "the server keeps failing"
    raise WeightsError(
        f"downloading {where} from {constants.ENDPOINT} failed after {attempts} attempts ({kind}: "
        f"{type(last).__name__}: {last}). Check your connection and HF_ENDPOINT and try again (an "
        f"interrupted download resumes), or put a local copy in {WEIGHTS_DIR_ENV}.") from None


def _http_modules() -> list:
    """The HTTP client packages huggingface_hub may use (``httpx2`` in 2.x, ``httpx`` in 1.x)."""
    mods = []
    for name in ("httpx2", "httpx"):
        try:
            mods.append(importlib.import_module(name))
        except ImportError:
            pass
    return mods


def _transport_errors() -> tuple[type[BaseException], ...]:
    return tuple(m.TransportError for m in _http_modules())


def _is_connection_error(exc: BaseException | None) -> bool:
    """A failure to talk to the server at all (as opposed to an HTTP error answer)."""
    kinds = tuple(k for m in _http_modules() for k in (m.ConnectError, m.ConnectTimeout)) + (ConnectionRefusedError,)
    e, seen = exc, set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, kinds):
            return True
        e = e.__cause__ or e.__context__
    return False


def _transient_cause(exc: BaseException) -> bool:
    """True when an exception chain holds a server error (5xx) or a connection failure."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled  # lazy, as in _check_repo_id

    seen = set()
    e: BaseException | None = exc.__cause__ or exc.__context__
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OfflineModeIsEnabled):
            return False
        if isinstance(e, HfHubHTTPError):
            status = getattr(getattr(e, "response", None), "status_code", None)
            return status is None or status >= 500
        if isinstance(e, (ConnectionError, TimeoutError)) or type(e).__name__ in (
                "ConnectError", "ConnectTimeout", "ReadTimeout", "RemoteProtocolError"):
            return True
        e = e.__cause__ or e.__context__
    return False


def _evict_from_hf_cache(path: Path) -> None:
    """Remove a cached snapshot entry and its blob so a corrupt download is not reused."""
    try:
        blob = path.resolve()
        if path.is_symlink():
            path.unlink()
        if blob != path and blob.exists():
            blob.unlink()
        elif path.exists():
            path.unlink()
    except OSError:
        pass


def resolve_weights_file(cfg: WeightsCfg) -> tuple[Path, str]:
    """Find the file of a registered tag; return ``(path, source)`` with source one of
    ``'weights-dir'``, ``'checkout-hub'``, ``'hf-hub'``. The sha256 is verified here."""
    if not cfg.has_weights:
        raise WeightsError(f"{cfg.name} has no weights on record (no hf_hub_id)")
    local = _local_repo_file(cfg)
    if local is not None:
        _check_sha256(local, cfg, evict=False)
        hub = checkout_hub_dir()
        source = "checkout-hub" if hub is not None and hub in local.parents else "weights-dir"
        return local, source
    if cfg.source == PAPER_SOURCE:
        # converted locally from the authors' release, whose license does not allow redistribution:
        # no Hub has them, so asking one would only fail slowly
        raise WeightsError(
            f"{cfg.name} are the paper authors' released weights, converted on your machine: they are not on "
            f"any Hub (no license to redistribute). Convert them once with `dsnet-zoo port-paper --src "
            f"PATH/TO/paper-weights --out ported` (the authors' .pt files from {PAPER_WEIGHTS_URL}), then set "
            f"{WEIGHTS_DIR_ENV}=ported. Looked in: "
            + (", ".join(str(d) for d in _weights_dirs()) or f"no folder ({WEIGHTS_DIR_ENV} is not set)") + ".")
    path = _hf_download(cfg.hf_hub_id, cfg.filename, cfg.revision)
    _check_sha256(path, cfg, evict=True)
    return path, "hf-hub"


def _check_sha256(path: Path, cfg: WeightsCfg, *, evict: bool, expected_by: str | None = None,
                  fix: str | None = None) -> None:
    """Refuse ``path`` (:class:`ChecksumError`) unless its sha256 is ``cfg.sha256``; nothing to check without one.
    ``expected_by``: who records the sha256 (default: the cfg's name); ``fix``: what to do, replacing the default."""
    if not cfg.sha256:
        return
    digest = sha256_file(path)
    if digest != cfg.sha256:
        if evict:
            _evict_from_hf_cache(path)
        raise ChecksumError(
            f"sha256 of {path} is {digest}, but {expected_by or cfg.name} expects {cfg.sha256}: the file is "
            "corrupt or not these weights, so it was refused"
            + (" and removed from the Hugging Face cache; load again to re-download." if evict else
               fix or ". Replace or delete that file."))


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` (preferred) or ``.pt``/``.pth`` (weights only)."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as e:
            raise WeightsError(f"{path} is not a readable safetensors file (truncated or corrupt?): {e}") from e
    if suffix in (".pt", ".pth", ".bin", ".ckpt"):
        try:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
        except Exception as e:  # pickle errors come in many types
            raise WeightsError(f"{path} could not be read with torch.load(weights_only=True): {e}") from e
        if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
            obj = obj["state_dict"]
        if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
            obj = obj["model"]
        if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
            raise WeightsError(f"{path} does not hold a state dict of tensors")
        return obj
    raise WeightsError(f"unsupported weights format {path.suffix!r} for {path}: use .safetensors "
                       "(or .pt/.pth, read with weights_only=True)")


def load_into_model(model: torch.nn.Module, state_dict: Mapping[str, torch.Tensor], *, what: str) -> None:
    """Strict load with a message that lists missing, unexpected and mis-shaped keys."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    mismatched = [f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
                  for k in own if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or mismatched:
        parts = []
        if mismatched:
            parts.append("shape mismatch: " + "; ".join(mismatched[:10]))
        if missing:
            parts.append("missing keys: " + ", ".join(missing[:10]))
        if unexpected:
            parts.append("unexpected keys: " + ", ".join(unexpected[:10]))
        raise WeightsError(f"{what} does not fit the model ({type(model).__name__}): " + " | ".join(parts)
                           + ". Check that the weights belong to this architecture and its arguments.")
    model.load_state_dict(state_dict, strict=True)


def load_weights(model: torch.nn.Module, cfg: WeightsCfg | None = None, *,
                 checkpoint_path: str | os.PathLike | None = None) -> dict[str, Any]:
    """Load weights into ``model``: from ``checkpoint_path`` if given, else from ``cfg``'s sources.

    Returns provenance: ``{'path', 'source', 'sha256'}``.
    """
    if checkpoint_path is not None:
        # the caller's own file: it replaces the tag's weights, so the tag's sha256 does not apply
        path = Path(checkpoint_path)
        source = "checkpoint"
    elif cfg is not None:
        path, source = resolve_weights_file(cfg)
    else:
        raise WeightsError("nothing to load: give a registered pretrained tag or checkpoint_path")
    sd = load_state_dict_file(path)
    load_into_model(model, sd, what=str(path))
    return {"path": str(path), "source": source, "sha256": sha256_file(path)}
