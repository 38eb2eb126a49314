"""Eval-mode caching of derived tensors (normalised weights, step sizes): :class:`CachedModule`.

In training mode a cached quantity is recomputed at every access (differentiably); in eval mode it is
computed once and cached until a parameter changes (its ``data_ptr`` or ``_version`` counter, which
optimizer steps and ``load_state_dict`` bump), or the dtype/device changes. Cached tensors are
constants: don't train in eval mode.
"""
from __future__ import annotations

import weakref
from typing import Callable

import torch
from torch import nn

from ._common import NotScriptable

__all__ = ["CachedModule", "clear_caches"]


class CachedModule(NotScriptable, nn.Module):
    """A module whose derived tensors (normalised weights, step sizes) are cached in eval mode.

    ``self._cached(name, fn)`` returns ``fn()``; in training mode it is recomputed each call, in
    eval mode it is computed once under ``no_grad`` and reused until a parameter of this module
    (recursively) is replaced or modified in place (its ``_version`` counter: optimizer steps,
    ``load_state_dict``, in-place ops under ``no_grad``), the dtype/device changes, or the mode
    changes. In-place edits through ``param.data`` bypass the version counter: call
    :meth:`clear_cache` after them (or edit under ``torch.no_grad()`` without ``.data``).
    """

    def __init__(self) -> None:
        super().__init__()
        self._cache: dict[str, tuple[tuple, list, object]] = {}

    def _params_key(self) -> tuple:
        # Tensors made under inference_mode cannot be saved for backward later: keep their cache apart.
        return (torch.is_inference_mode_enabled(),) + tuple(
            (p.data_ptr(), p._version, p.dtype, p.device) for p in self.parameters())

    def _cached(self, name: str, fn: Callable[[], object]):
        if self.training:
            return fn()
        try:
            key = self._params_key()
        except RuntimeError:  # parameters made under inference_mode have no version counter: no cache
            with torch.no_grad():
                return fn()
        params = list(self.parameters())
        hit = self._cache.get(name)
        # identity check too: a replaced parameter may reuse a freed address with version 0
        if hit is not None and hit[0] == key and len(hit[1]) == len(params) and all(
                r() is p for r, p in zip(hit[1], params)):
            return hit[2]
        with torch.no_grad():
            value = fn()
        self._cache[name] = (key, [weakref.ref(p) for p in params], value)
        return value

    def train(self, mode: bool = True):
        if mode != self.training:
            self._cache.clear()
        return super().train(mode)

    def clear_cache(self) -> None:
        for m in self.modules():
            if isinstance(m, CachedModule):
                m._cache.clear()


def clear_caches(module: nn.Module) -> None:
    """Drop the eval-mode caches of every :class:`CachedModule` inside ``module``."""
    for m in module.modules():
        if isinstance(m, CachedModule):
            m._cache.clear()
