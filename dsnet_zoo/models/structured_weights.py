"""The zoo's own HamNet and VPNet weights (:mod:`dsnet_zoo.models.hamnet`, :mod:`dsnet_zoo.models.vpnet`), trained by
``dsnet-zoo train`` on the real CIFAR-10 and CIFAR-100 train splits on a 2-core CPU (one thread per run, two runs
side by side).

The files live in the checkout's ``hub/dsnet-zoo/<arch>/`` (an architecture's first tag) and
``hub/dsnet-zoo/<arch>-<tag>/`` (later tags) in Hugging Face repo layout, pinned by their sha256.
``dsnet-zoo train ARCH.TAG --out DIR`` reruns the recorded recipe (bit for bit on CPU with one thread,
``OMP_NUM_THREADS=1``, and the same library versions). ``model_args`` are written out in full (the runs used the
architectures' defaults, which equal them), so a later change of the defaults cannot change what these weights
load into. Metrics: clean accuracy on the full real test set (float32, eval mode) and the float64 relative error
of reconstructing real test images from their features with ``model.inverse`` (the largest over the images).
"""
from __future__ import annotations

from ..hub import WeightsCfg
from ..registry import register_pretrained
from . import hamnet, vpnet  # noqa: F401  (registers the architectures first)
from .hamnet import CIFAR_MEAN, CIFAR_STD

__all__ = ["HAMNET_CIFAR10_DEFAULT", "VPNET_CIFAR10_DEFAULT", "HAMNET_CIFAR10_CPU_E18", "VPNET_CIFAR10_CPU_E15",
           "HAMNET_CIFAR100_DEFAULT", "VPNET_CIFAR100_DEFAULT", "HAMNET_CIFAR100_CPU_E22", "VPNET_CIFAR100_CPU_E19"]



def _cifar_cfg(arch: str, classes: int, *, repo: str | None = None, **fields) -> WeightsCfg:
    """The fields every tag here shares: CIFAR-``classes`` inputs in [0, 1] standardised inside the model, MIT
    weights of this repository's hub folder ``hub/dsnet-zoo/<repo>``. ``repo`` is ``<arch>`` for an
    architecture's first tag and ``<arch>-<tag>`` for later ones (one Hub repo per tag; earlier tags keep
    their folders, so recipes that start from them stay rerunnable)."""
    repo = repo or arch
    return WeightsCfg(hf_hub_id=f"dsnet-zoo/{repo}", num_classes=classes, input_size=(3, 32, 32),
                      input_range=(0.0, 1.0), norm_mean=CIFAR_MEAN[classes], norm_std=CIFAR_STD[classes],
                      dataset=f"cifar{classes}-full", license="MIT", source="dsnet_zoo",
                      origin=f"hub/dsnet-zoo/{repo} (this repository)", **fields)


# the sets the metrics below were measured on (descriptions as dsnet_zoo.data writes them)
_TEST_SET = {10: "CIFAR-10 test, 9,977 of 10,000 images (exact pixels)",
             100: "CIFAR-100 test, all 10,000 images (exact pixels)"}
_INVERSE_SET = {10: "CIFAR-10 test, first 1,000 of 10,000 images (official indices 0-999, exact pixels)",
                100: "CIFAR-100 test, ranks 0-9 of each class (1,000 of 10,000 images, exact pixels)"}


def _metrics(classes: int, clean: float, inverse_rel_error: float, cpu_hours: float) -> dict:
    """Clean accuracy on the full test set, the float64 reconstruction error of 1,000 test images, CPU-hours."""
    return {f"cifar{classes}-full": {"clean": clean}, "evaluated_on": _TEST_SET[classes],
            "inverse_images": _INVERSE_SET[classes], "inverse_rel_error_float64": inverse_rel_error,
            "training_cpu_hours": cpu_hours}


_HAMNET_ARGS = {"widths": [64, 256], "depths": [2, 4], "hidden_ratio": 0.5, "act": "silu", "step": 0.2}
_VPNET_ARGS = {"widths": [64, 256], "depths": [4, 6], "act": "silu", "step": 0.2}

_RECIPE_HAMNET_CIFAR10 = {
    "amp": "bf16",
    "augment": "crop_flip",
    "batch_size": 256,
    "cert_eps": 0.1411764705882353,
    "channels_last": True,
    "data_seed": 0,
    "dataset": "cifar10-full",
    "dataset_args": {},
    "ema": 0.999,
    "epochs": 18,
    "eval_dataset": "cifar10-full",
    "eval_limit": 2000,
    "eval_split": "test",
    "grad_clip": 5.0,
    "label_smoothing": 0.1,
    "loss": "ce",
    "lr": 0.1,
    "margin": 0.15,
    "model": "hamnet_cifar10",
    "model_args": _HAMNET_ARGS,
    "momentum": 0.9,
    "nesterov": True,
    "optimizer": "sgd",
    "schedule": "cosine",
    "seed": 0,
    "tag": "cpu_e18",
    "task": "classification",
    "temperature": 1.0,
    "train_limit": None,
    "train_split": "train",
    "version": 1,
    "warmup_epochs": 1.0,
    "weight_decay": 0.0005
}

# CIFAR-10 defaults: a second cosine cycle (warm restart, ``init_from``) from the first tags below, which are
# registered after them (the first registered tag is the default) and stay loadable as their parents
_RECIPE_HAMNET_CIFAR10_R18 = {**_RECIPE_HAMNET_CIFAR10, "epochs": 18, "init_from": "hamnet_cifar10.cpu_e18",
                              "lr": 0.05, "tag": "cpu_e18_r18"}

HAMNET_CIFAR10_DEFAULT = register_pretrained("hamnet_cifar10", _cifar_cfg(
    "hamnet_cifar10", 10, repo="hamnet_cifar10-cpu_e18_r18",
    tag='cpu_e18_r18',
    sha256='3c16dbb5dfa4fcdb2226364e6e3efe303b26d01f52172d7614fbdde2ddeb9d91',
    recipe=_RECIPE_HAMNET_CIFAR10_R18,
    model_args=_HAMNET_ARGS,
    description=('HamNet for CIFAR-10: an exactly invertible feature extractor (pixel unshuffle, injective 1x1 lifts, '
                 'batch norms, 2 + 4 symplectic-Euler blocks at 16x16 / 8x8) and a pooled linear head; every block is '
                 'symplectic for any weights. hamnet_cifar10.cpu_e18 (18 epochs) trained 18 more epochs from its '
                 'weights (a warm restart: fresh optimizer, peak lr 0.05, cosine) on the real CIFAR-10 train split '
                 '(cifar10-full: 49,904 of the 50,000 official train images, exact pixels) with cross-entropy on one '
                 'CPU thread (1.02 CPU-hours, 2.32 with the parent run); measured on CIFAR-10 test, 9,977 of 10,000 '
                 'images (exact pixels).'),
    metrics=_metrics(10, 88.83, 9.151330132146829e-14, 2.32),
    num_params=1287184,
))

# the VPNet recipe differs from the HamNet one only in these fields
_RECIPE_VPNET_CIFAR10 = {**_RECIPE_HAMNET_CIFAR10, "model": "vpnet_cifar10", "epochs": 15, "tag": "cpu_e15",
                         "model_args": _VPNET_ARGS}
_RECIPE_VPNET_CIFAR10_R15 = {**_RECIPE_VPNET_CIFAR10, "init_from": "vpnet_cifar10.cpu_e15", "lr": 0.05,
                             "tag": "cpu_e15_r15"}

VPNET_CIFAR10_DEFAULT = register_pretrained("vpnet_cifar10", _cifar_cfg(
    "vpnet_cifar10", 10, repo="vpnet_cifar10-cpu_e15_r15",
    tag='cpu_e15_r15',
    sha256='383744cdae82cbb4fa4eefd9593eb736a358162e01cc2668a3d702d927e7f46f',
    recipe=_RECIPE_VPNET_CIFAR10_R15,
    model_args=_VPNET_ARGS,
    description=('VPNet for CIFAR-10: an exactly invertible feature extractor (pixel unshuffle, injective 1x1 lifts, '
                 'batch norms, 4 + 6 volume-preserving blocks at 16x16 / 8x8) and a pooled linear head; every block '
                 'has det J = 1 for any weights. vpnet_cifar10.cpu_e15 (15 epochs) trained 15 more epochs from its '
                 'weights (a warm restart: fresh optimizer, peak lr 0.05, cosine) on the real CIFAR-10 train split '
                 '(cifar10-full: 49,904 of the 50,000 official train images, exact pixels) with cross-entropy on one '
                 'CPU thread (1.03 CPU-hours, 2.32 with the parent run); measured on CIFAR-10 test, 9,977 of 10,000 '
                 'images (exact pixels).'),
    metrics=_metrics(10, 89.51, 5.146300924279552e-14, 2.32),
    num_params=1914516,
))

HAMNET_CIFAR10_CPU_E18 = register_pretrained("hamnet_cifar10", _cifar_cfg(
    "hamnet_cifar10", 10,
    tag='cpu_e18',
    sha256='1b1ccbe885f82197fa3148ea97429f8f7817061725f08cffb9409176a5d1dacd',
    recipe=_RECIPE_HAMNET_CIFAR10,
    model_args=_HAMNET_ARGS,
    description=('HamNet for CIFAR-10: an exactly invertible feature extractor (pixel unshuffle, injective 1x1 lifts, '
                 'batch norms, 2 + 4 symplectic-Euler blocks at 16x16 / 8x8) and a pooled linear head; every block is '
                 'symplectic for any weights. Trained 18 epochs on the real CIFAR-10 train split (cifar10-full: 49,904 '
                 'of the 50,000 official train images, exact pixels) with cross-entropy on one CPU thread (1.30 '
                 'CPU-hours); measured on CIFAR-10 test, 9,977 of 10,000 images (exact pixels).'),
    metrics=_metrics(10, 86.56, 1.9129871222973154e-14, 1.3),
    num_params=1287184,
))

VPNET_CIFAR10_CPU_E15 = register_pretrained("vpnet_cifar10", _cifar_cfg(
    "vpnet_cifar10", 10,
    tag='cpu_e15',
    sha256='c689ea1ff74ed22ab24877b1f9776ed9305edd07b682135d6d0aae1a4ba56522',
    recipe=_RECIPE_VPNET_CIFAR10,
    model_args=_VPNET_ARGS,
    description=('VPNet for CIFAR-10: an exactly invertible feature extractor (pixel unshuffle, injective 1x1 lifts, '
                 'batch norms, 4 + 6 volume-preserving blocks at 16x16 / 8x8) and a pooled linear head; every block '
                 'has det J = 1 for any weights. Trained 15 epochs on the real CIFAR-10 train split (cifar10-full: '
                 '49,904 of the 50,000 official train images, exact pixels) with cross-entropy on one CPU thread (1.29 '
                 'CPU-hours); measured on CIFAR-10 test, 9,977 of 10,000 images (exact pixels).'),
    metrics=_metrics(10, 88.09, 2.552737225251314e-14, 1.29),
    num_params=1914516,
))


# CIFAR-100: the CIFAR-10 recipes on cifar100-full, with their own epoch counts
_RECIPE_HAMNET_CIFAR100 = {**_RECIPE_HAMNET_CIFAR10, "model": "hamnet_cifar100", "dataset": "cifar100-full",
                           "eval_dataset": "cifar100-full", "epochs": 22, "tag": "cpu_e22"}

# the default tag: a second cosine cycle from the first tag (registered after it, loadable as its parent)
_RECIPE_HAMNET_CIFAR100_R12 = {**_RECIPE_HAMNET_CIFAR100, "epochs": 12, "init_from": "hamnet_cifar100.cpu_e22",
    "lr": 0.05, "tag": "cpu_e22_r12", "weight_decay": 0.001}

HAMNET_CIFAR100_DEFAULT = register_pretrained("hamnet_cifar100", _cifar_cfg(
    "hamnet_cifar100", 100, repo="hamnet_cifar100-cpu_e22_r12",
    tag='cpu_e22_r12',
    sha256='85dcd15855943f51925803237b03e40789e1da1442e80c02f14dca5759286515',
    recipe=_RECIPE_HAMNET_CIFAR100_R12,
    model_args=_HAMNET_ARGS,
    description=('HamNet for CIFAR-100: the CIFAR-10 layout (an exactly invertible feature extractor of pixel '
                 'unshuffle, injective 1x1 lifts, batch norms and 2 + 4 symplectic-Euler blocks at 16x16 / 8x8, then a '
                 'pooled linear head). hamnet_cifar100.cpu_e22 (22 epochs) trained 12 more epochs from its weights (a '
                 'warm restart: fresh optimizer, peak lr 0.05, cosine, weight decay 1e-3 instead of 5e-4) on the real '
                 'CIFAR-100 train split (cifar100-full: all 50,000 official train images, exact pixels) with '
                 'cross-entropy on one CPU thread (0.83 CPU-hours, 2.06 with the parent run); measured on CIFAR-100 '
                 'test, all 10,000 images (exact pixels).'),
    metrics=_metrics(100, 63.67, 1.0059875748114935e-12, 2.06),
    num_params=1310314,
))

HAMNET_CIFAR100_CPU_E22 = register_pretrained("hamnet_cifar100", _cifar_cfg(
    "hamnet_cifar100", 100,
    tag='cpu_e22',
    sha256='f659da0cba848a3f55ca3ab4e7b86a1fa83f83ec2d95d478aa6a3f9f73247e36',
    recipe=_RECIPE_HAMNET_CIFAR100,
    model_args=_HAMNET_ARGS,
    description=('HamNet for CIFAR-100: the CIFAR-10 layout (an exactly invertible feature extractor of pixel '
                 'unshuffle, injective 1x1 lifts, batch norms and 2 + 4 symplectic-Euler blocks at 16x16 / 8x8, then a '
                 'pooled linear head) and recipe. Trained 22 epochs on the real CIFAR-100 train split (cifar100-full: '
                 'all 50,000 official train images, exact pixels) with cross-entropy on one CPU thread (1.23 '
                 'CPU-hours); measured on CIFAR-100 test, all 10,000 images (exact pixels).'),
    metrics=_metrics(100, 61.99, 1.3309683802578647e-13, 1.23),
    num_params=1310314,
))

_RECIPE_VPNET_CIFAR100 = {**_RECIPE_VPNET_CIFAR10, "model": "vpnet_cifar100", "dataset": "cifar100-full",
                          "eval_dataset": "cifar100-full", "epochs": 19, "tag": "cpu_e19"}

# the default tag: a second cosine cycle from the first tag (registered after it, loadable as its parent)
_RECIPE_VPNET_CIFAR100_R10 = {**_RECIPE_VPNET_CIFAR100, "epochs": 10, "init_from": "vpnet_cifar100.cpu_e19",
    "lr": 0.05, "tag": "cpu_e19_r10", "weight_decay": 0.001}

VPNET_CIFAR100_DEFAULT = register_pretrained("vpnet_cifar100", _cifar_cfg(
    "vpnet_cifar100", 100, repo="vpnet_cifar100-cpu_e19_r10",
    tag='cpu_e19_r10',
    sha256='8e33c6f2f7279a40137f9bcccee52fd3a3bdabf79a363b2b35e607f9f784c324',
    recipe=_RECIPE_VPNET_CIFAR100_R10,
    model_args=_VPNET_ARGS,
    description=('VPNet for CIFAR-100: the CIFAR-10 layout (an exactly invertible feature extractor of pixel '
                 'unshuffle, injective 1x1 lifts, batch norms and 4 + 6 volume-preserving blocks at 16x16 / 8x8, then '
                 'a pooled linear head). vpnet_cifar100.cpu_e19 (19 epochs) trained 10 more epochs from its weights (a '
                 'warm restart: fresh optimizer, peak lr 0.05, cosine, weight decay 1e-3 instead of 5e-4) on the real '
                 'CIFAR-100 train split (cifar100-full: all 50,000 official train images, exact pixels) with '
                 'cross-entropy on one CPU thread (0.86 CPU-hours, 2.20 with the parent run); measured on CIFAR-100 '
                 'test, all 10,000 images (exact pixels).'),
    metrics=_metrics(100, 65.04, 4.467676004207476e-13, 2.2),
    num_params=1937646,
))

VPNET_CIFAR100_CPU_E19 = register_pretrained("vpnet_cifar100", _cifar_cfg(
    "vpnet_cifar100", 100,
    tag='cpu_e19',
    sha256='04e8db8eb080ded6c83b4785c7f1239a79b3eb72fb97657d12d36e6b778c3107',
    recipe=_RECIPE_VPNET_CIFAR100,
    model_args=_VPNET_ARGS,
    description=('VPNet for CIFAR-100: the CIFAR-10 layout (an exactly invertible feature extractor of pixel '
                 'unshuffle, injective 1x1 lifts, batch norms and 4 + 6 volume-preserving blocks at 16x16 / 8x8, then '
                 'a pooled linear head) and recipe. Trained 19 epochs on the real CIFAR-100 train split '
                 '(cifar100-full: all 50,000 official train images, exact pixels) with cross-entropy on one CPU thread '
                 '(1.34 CPU-hours); measured on CIFAR-100 test, all 10,000 images (exact pixels).'),
    metrics=_metrics(100, 64.09, 9.26797045444219e-14, 1.34),
    num_params=1937646,
))
