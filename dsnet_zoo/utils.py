"""Small helpers shared by weights, evaluation and training: atomic writes and device choice."""
from __future__ import annotations

import contextlib
import os
import signal
import tempfile
import threading
from pathlib import Path
from typing import BinaryIO, Iterator

import torch

__all__ = ["atomic_writer", "atomic_write_bytes", "atomic_write_text", "resolve_device"]


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """A binary file to write ``path`` through: a temp file in the same folder, fsynced and renamed
    over ``path`` when the block ends without an error (removed otherwise). A reader sees the old
    file or the new one, never a half-written one; large files can be streamed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        # mkstemp creates 0600; give the file the permissions a plain open() would
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_writer`)."""
    with atomic_writer(path) as f:
        f.write(data)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


_interrupted = False


def _on_sigint(signum, frame) -> None:
    global _interrupted
    _interrupted = True
    raise KeyboardInterrupt


@contextlib.contextmanager
def remembered_interrupts() -> Iterator[None]:
    """Ctrl-C inside the block raises ``KeyboardInterrupt`` as usual and is also remembered, so that
    :func:`raise_if_interrupted` raises it again at the next safe point (a training step, an evaluation
    batch). Python ignores an exception raised in a finaliser (``__del__``, weakref callbacks), so a
    Ctrl-C that lands in one would otherwise be lost and a long run would go on. Only in the main thread
    (the only one that receives signals) and unless SIGINT is ignored; the previous handler is restored on exit."""
    global _interrupted
    # a process started with SIGINT ignored (a non-interactive shell's `cmd &`) keeps ignoring it, as Python does
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        yield
        return
    previous = signal.signal(signal.SIGINT, _on_sigint)
    _interrupted = False
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        _interrupted = False


def raise_if_interrupted() -> None:
    """Raise ``KeyboardInterrupt`` if Ctrl-C was pressed inside :func:`remembered_interrupts`."""
    if _interrupted:
        raise KeyboardInterrupt


@contextlib.contextmanager
def weights_in_layout(model: torch.nn.Module, channels_last: bool) -> Iterator[torch.memory_format]:
    """Inside the block, the model's 4-d weights are in the channels-last memory layout when
    ``channels_last``; on exit, even on error, they are back in the default layout. Yields the layout to
    give inputs in. A speed setting only: the same values, but convolutions pick the channels-last kernels
    (faster on CPU for most conv nets) and sum in another order, so float32 outputs differ at about 1e-6."""
    layout = torch.channels_last if channels_last else torch.contiguous_format
    try:
        # Inside the try: a conversion that fails part-way must not leave some weights converted.
        model.to(memory_format=layout)
        yield layout
    finally:
        model.to(memory_format=torch.contiguous_format)


def cpu_has_fast_bf16() -> bool:
    """Whether oneDNN has a fast bf16 path on this CPU (as ``torch`` reports it: AVX-512 core or newer on x86,
    with AVX512-BF16 or AMX computing bf16 natively). Without it, bf16 autocast on the CPU is emulated: a
    ``lipnet_cifar10`` training step measured 13x slower than float32 on an AMD EPYC (Zen 3, AVX2 only), where
    it is 2-3x faster on CPUs that have it."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch build without oneDNN: no fast bf16 path either
        return False


def resolve_device(device: str | torch.device = "auto", local_rank: int = 0) -> torch.device:
    """``auto``: CUDA when available, else CPU; ``cuda`` without a GPU is an error.
    Under ``torchrun``, CUDA processes use the GPU of their local rank."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        if not torch.cuda.is_available():
            raise ValueError("--device cuda was asked for, but torch sees no CUDA GPU; use --device cpu or auto")
        return torch.device("cuda", local_rank)
    if device == "cpu":
        return torch.device("cpu")
    return torch.device(device)
