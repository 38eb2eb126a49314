"""The zoo's own HamNet and VPNet weights (:mod:`dsnet_zoo.models.hamnet`, :mod:`dsnet_zoo.models.vpnet`), trained by
``dsnet-zoo train`` on the real CIFAR-10 and CIFAR-100 train splits on a 2-core CPU (one thread per run, two runs
side by side).

Each tag has its Hub repo, ``dsnet-zoo/<arch>`` (an architecture's first tag) or ``dsnet-zoo/<arch>-<tag>`` (later
tags), pinned by its sha256. Only the last weights of each chain of warm restarts are hosted (in the checkout's
``hub/``, Hugging Face repo layout); the earlier tags are retired (:func:`~dsnet_zoo.registry.register_retired`):
their records stay and a recipe starting from them retrains them first.
``dsnet-zoo train ARCH.TAG --out DIR`` reruns the recorded recipe (bit for bit on CPU with one thread,
``OMP_NUM_THREADS=1``, and the same library versions). ``model_args`` are written out in full (the runs used the
architectures' defaults, which equal them), so a later change of the defaults cannot change what these weights
load into. Metrics: clean accuracy on the full real test set (float32, eval mode) and the float64 relative error
of reconstructing real test images from their features with ``model.inverse`` (the largest over the images).
"""
from __future__ import annotations

from ..hub import WeightsCfg
from ..registry import register_pretrained, register_retired
from . import hamnet, vpnet  # noqa: F401  (registers the architectures first)
from .hamnet import CIFAR_MEAN, CIFAR_STD

__all__ = ["HAMNET_CIFAR10_DEFAULT", "VPNET_CIFAR10_DEFAULT", "HAMNET_CIFAR10_CPU_E18", "VPNET_CIFAR10_CPU_E15",
           "HAMNET_CIFAR100_DEFAULT", "VPNET_CIFAR100_DEFAULT", "HAMNET_CIFAR100_CPU_E22", "VPNET_CIFAR100_CPU_E19",
           "HAMNET_CIFAR100_CPU_E22_R12", "HAMNET_CIFAR10_CPU_E18_R18"]



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

# what each architecture is, as its tags' descriptions begin
_LAYOUT = {
    "hamnet_cifar10": ('HamNet for CIFAR-10: an exactly invertible feature extractor (pixel unshuffle, injective 1x1 '
                       'lifts, batch norms, 2 + 4 symplectic-Euler blocks at 16x16 / 8x8) and a pooled linear head; '
                       'every block is symplectic for any weights'),
    "vpnet_cifar10": ('VPNet for CIFAR-10: an exactly invertible feature extractor (pixel unshuffle, injective 1x1 '
                      'lifts, batch norms, 4 + 6 volume-preserving blocks at 16x16 / 8x8) and a pooled linear head; '
                      'every block has det J = 1 for any weights'),
    "hamnet_cifar100": ('HamNet for CIFAR-100: the CIFAR-10 layout (an exactly invertible feature extractor of pixel '
                        'unshuffle, injective 1x1 lifts, batch norms and 2 + 4 symplectic-Euler blocks at 16x16 / 8x8, '
                        'then a pooled linear head)'),
    "vpnet_cifar100": ('VPNet for CIFAR-100: the CIFAR-10 layout (an exactly invertible feature extractor of pixel '
                       'unshuffle, injective 1x1 lifts, batch norms and 4 + 6 volume-preserving blocks at 16x16 / '
                       '8x8, then a pooled linear head)'),
}
_TRAIN_SET = {10: "cifar10-full: 49,904 of the 50,000 official train images, exact pixels",
              100: "cifar100-full: all 50,000 official train images, exact pixels"}


def _first_cycle(arch: str, classes: int, *, tag: str, sha256: str, recipe: dict, model_args: dict, clean: float,
                 inverse_rel_error: float, cpu_hours: float, num_params: int, layout_suffix: str = "") -> WeightsCfg:
    """The cfg of a run from the seeded initialisation (``recipe['epochs']`` epochs on one CPU thread)."""
    return _cifar_cfg(
        arch, classes, tag=tag, sha256=sha256, recipe=recipe, model_args=model_args, num_params=num_params,
        description=(f"{_LAYOUT[arch]}{layout_suffix}. Trained {recipe['epochs']} epochs on the real CIFAR-{classes} "
                     f"train split ({_TRAIN_SET[classes]}) with cross-entropy on one CPU thread ({cpu_hours:.2f} "
                     f"CPU-hours); measured on {_TEST_SET[classes]}."),
        metrics=_metrics(classes, clean, inverse_rel_error, cpu_hours))


def _warm_restart(parent: WeightsCfg, *, tag: str, sha256: str, epochs: int, clean: float, inverse_rel_error: float,
                  run_cpu_hours: float, **recipe_changes) -> WeightsCfg:
    """The cfg of one more cosine cycle from ``parent`` (``init_from``: fresh optimizer, peak lr 0.05 unless
    ``recipe_changes`` say otherwise, ``epochs`` epochs; ``recipe_changes`` override recipe fields), in its own
    hub folder ``<arch>-<tag>``. Its CPU-hours add to the parent's."""
    arch, classes = parent.recipe["model"], parent.num_classes
    recipe = {**parent.recipe, "epochs": epochs, "init_from": f"{arch}.{parent.tag}", "lr": 0.05, "tag": tag,
              **recipe_changes}
    wd, parent_wd = (f"{r['weight_decay']:.0e}".replace("e-0", "e-") for r in (recipe, parent.recipe))
    changes = f", weight decay {wd} instead of {parent_wd}" if wd != parent_wd else ""
    if recipe["label_smoothing"] != parent.recipe["label_smoothing"]:
        changes += f", label smoothing {recipe['label_smoothing']:g} instead of {parent.recipe['label_smoothing']:g}"
    total = round(parent.metrics["training_cpu_hours"] + run_cpu_hours, 2)
    before = "runs before it" if parent.recipe.get("init_from") else "parent run"
    return _cifar_cfg(
        arch, classes, repo=f"{arch}-{tag}", tag=tag, sha256=sha256, recipe=recipe,
        model_args=parent.model_args, num_params=parent.num_params,
        description=(f"{_LAYOUT[arch]}. {arch}.{parent.tag} ({parent.recipe['epochs']} epochs) trained {epochs} more "
                     f"epochs from its weights (a warm restart: fresh optimizer, peak lr {recipe['lr']:g}, "
                     f"cosine{changes}) on the real CIFAR-{classes} train split ({_TRAIN_SET[classes]}) with cross-entropy on one CPU thread "
                     f"({run_cpu_hours:.2f} CPU-hours, {total:.2f} with the {before}); measured on "
                     f"{_TEST_SET[classes]}."),
        metrics=_metrics(classes, clean, inverse_rel_error, total))


# the VPNet recipe differs from the HamNet one only in these fields
_RECIPE_VPNET_CIFAR10 = {**_RECIPE_HAMNET_CIFAR10, "model": "vpnet_cifar10", "epochs": 15, "tag": "cpu_e15",
                         "model_args": _VPNET_ARGS}
# CIFAR-100: the CIFAR-10 recipes on cifar100-full, with their own epoch counts
_CIFAR100 = {"dataset": "cifar100-full", "eval_dataset": "cifar100-full"}
_RECIPE_HAMNET_CIFAR100 = {**_RECIPE_HAMNET_CIFAR10, **_CIFAR100, "model": "hamnet_cifar100", "epochs": 22,
                           "tag": "cpu_e22"}
_RECIPE_VPNET_CIFAR100 = {**_RECIPE_VPNET_CIFAR10, **_CIFAR100, "model": "vpnet_cifar100", "epochs": 19,
                          "tag": "cpu_e19"}

# the first cycles; the tags continuing from them are registered first (the first registered tag is an
# architecture's default, and a retired tag names a registered successor)
_HAMNET_CIFAR10_E18 = _first_cycle(
    "hamnet_cifar10", 10, tag="cpu_e18", sha256="1b1ccbe885f82197fa3148ea97429f8f7817061725f08cffb9409176a5d1dacd",
    recipe=_RECIPE_HAMNET_CIFAR10, model_args=_HAMNET_ARGS, clean=86.56, inverse_rel_error=1.9129871222973154e-14,
    cpu_hours=1.3, num_params=1287184)
_VPNET_CIFAR10_E15 = _first_cycle(
    "vpnet_cifar10", 10, tag="cpu_e15", sha256="c689ea1ff74ed22ab24877b1f9776ed9305edd07b682135d6d0aae1a4ba56522",
    recipe=_RECIPE_VPNET_CIFAR10, model_args=_VPNET_ARGS, clean=88.09, inverse_rel_error=2.552737225251314e-14,
    cpu_hours=1.29, num_params=1914516)
_HAMNET_CIFAR100_E22 = _first_cycle(
    "hamnet_cifar100", 100, tag="cpu_e22", sha256="f659da0cba848a3f55ca3ab4e7b86a1fa83f83ec2d95d478aa6a3f9f73247e36",
    recipe=_RECIPE_HAMNET_CIFAR100, model_args=_HAMNET_ARGS, clean=61.99, inverse_rel_error=1.3309683802578647e-13,
    cpu_hours=1.23, num_params=1310314, layout_suffix=" and recipe")
_VPNET_CIFAR100_E19 = _first_cycle(
    "vpnet_cifar100", 100, tag="cpu_e19", sha256="04e8db8eb080ded6c83b4785c7f1239a79b3eb72fb97657d12d36e6b778c3107",
    recipe=_RECIPE_VPNET_CIFAR100, model_args=_VPNET_ARGS, clean=64.09, inverse_rel_error=9.26797045444219e-14,
    cpu_hours=1.34, num_params=1937646, layout_suffix=" and recipe")

# the warm restarts (further cosine cycles); the default tags, hosted, are the last of each chain: HamNet's
# third cycles (stronger regularisation), VPNet's second (its CIFAR-10 third cycle scored lower, not shipped)
_HAMNET_CIFAR10_R18 = _warm_restart(
    _HAMNET_CIFAR10_E18, tag="cpu_e18_r18", sha256="3c16dbb5dfa4fcdb2226364e6e3efe303b26d01f52172d7614fbdde2ddeb9d91",
    epochs=18, clean=88.83, inverse_rel_error=9.151330132146829e-14, run_cpu_hours=1.02)
HAMNET_CIFAR10_DEFAULT = register_pretrained("hamnet_cifar10", _warm_restart(
    _HAMNET_CIFAR10_R18, tag="cpu_e18_r18_r8",
    sha256="8e8b4e6510ed73aff88f2f03ac9fafdb45624fa41bcd14e976db8535d609b976", epochs=8, clean=88.89,
    inverse_rel_error=2.3367150984980396e-13, run_cpu_hours=0.47, lr=0.02, weight_decay=0.001, label_smoothing=0.2))
VPNET_CIFAR10_DEFAULT = register_pretrained("vpnet_cifar10", _warm_restart(
    _VPNET_CIFAR10_E15, tag="cpu_e15_r15", sha256="383744cdae82cbb4fa4eefd9593eb736a358162e01cc2668a3d702d927e7f46f",
    epochs=15, clean=89.51, inverse_rel_error=5.146300924279552e-14, run_cpu_hours=1.03))
_HAMNET_CIFAR100_R12 = _warm_restart(
    _HAMNET_CIFAR100_E22, tag="cpu_e22_r12", sha256="85dcd15855943f51925803237b03e40789e1da1442e80c02f14dca5759286515",
    epochs=12, clean=63.67, inverse_rel_error=1.0059875748114935e-12, run_cpu_hours=0.83, weight_decay=0.001)
HAMNET_CIFAR100_DEFAULT = register_pretrained("hamnet_cifar100", _warm_restart(
    _HAMNET_CIFAR100_R12, tag="cpu_e22_r12_r12",
    sha256="da4710065e3e1592810cdb2ba8f923d799159246bd7f8cb8860445ed93224ec9", epochs=12, clean=66.05,
    inverse_rel_error=1.5155702251274108e-12, run_cpu_hours=0.80, weight_decay=0.002, label_smoothing=0.2))
VPNET_CIFAR100_DEFAULT = register_pretrained("vpnet_cifar100", _warm_restart(
    _VPNET_CIFAR100_E19, tag="cpu_e19_r10", sha256="8e33c6f2f7279a40137f9bcccee52fd3a3bdabf79a363b2b35e607f9f784c324",
    epochs=10, clean=65.04, inverse_rel_error=4.467676004207476e-13, run_cpu_hours=0.86, weight_decay=0.001))

# retired: on record, no longer hosted; each names the tag that continues from it
HAMNET_CIFAR10_CPU_E18_R18 = register_retired("hamnet_cifar10", _HAMNET_CIFAR10_R18,
                                             successor="hamnet_cifar10.cpu_e18_r18_r8")
HAMNET_CIFAR10_CPU_E18 = register_retired("hamnet_cifar10", _HAMNET_CIFAR10_E18, successor="hamnet_cifar10.cpu_e18_r18")
VPNET_CIFAR10_CPU_E15 = register_retired("vpnet_cifar10", _VPNET_CIFAR10_E15, successor="vpnet_cifar10.cpu_e15_r15")
HAMNET_CIFAR100_CPU_E22_R12 = register_retired("hamnet_cifar100", _HAMNET_CIFAR100_R12,
                                              successor="hamnet_cifar100.cpu_e22_r12_r12")
HAMNET_CIFAR100_CPU_E22 = register_retired("hamnet_cifar100", _HAMNET_CIFAR100_E22,
                                           successor="hamnet_cifar100.cpu_e22_r12")
VPNET_CIFAR100_CPU_E19 = register_retired("vpnet_cifar100", _VPNET_CIFAR100_E19, successor="vpnet_cifar100.cpu_e19_r10")
