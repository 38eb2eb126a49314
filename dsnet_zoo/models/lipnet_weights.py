"""The zoo's own certified flagship weights: ``lipnet_cifar10`` and ``lipnet_cifar100`` (:class:`~dsnet_zoo.models.lipflow.LipFlowNet`),
trained by ``dsnet-zoo train`` on the real CIFAR train splits on a 2-core CPU (one thread per run).

The files live in the checkout's ``hub/dsnet-zoo/<repo>/`` (Hugging Face repo layout; ``<repo>`` is ``<arch>``
for an architecture's first tag, ``<arch>-<tag>`` for a later one) and are pinned by their sha256 (the repos do
not exist on the Hub yet, so there is no commit revision to pin: the sha256 is the pin). Only the last weights
of a chain of warm restarts are hosted; the earlier tags are retired (:func:`~dsnet_zoo.registry.register_retired`):
their records stay, and a recipe starting from them retrains them first. ``dsnet-zoo train ARCH.TAG --out DIR``
reruns the recorded recipe (bit for bit on CPU with one thread, ``OMP_NUM_THREADS=1``, and the same library
versions). Metrics are the measured clean and certified (L2, from the model's certified Lipschitz bound)
accuracies on the full real test set.
"""
from __future__ import annotations

from ..hub import WeightsCfg
from ..registry import register_pretrained, register_retired
from . import lipflow  # noqa: F401  (registers the architectures first)
from .lipnet import CIFAR10_MEAN, CIFAR100_MEAN

__all__ = ['LIPNET_CIFAR10_DEFAULT', 'LIPNET_CIFAR100_DEFAULT', 'LIPNET_CIFAR10_CPU_E100',
           'LIPNET_CIFAR10_CPU_E100_R300', 'LIPNET_CIFAR100_CPU_E100']

_RECIPE_10 = {
    "amp": "bf16",
    "augment": "crop_flip",
    "batch_size": 256,
    "cert_eps": 0.2,
    "channels_last": True,
    "data_seed": 0,
    "dataset": "cifar10-full",
    "dataset_args": {},
    "ema": 0.999,
    "epochs": 100,
    "eval_dataset": "cifar10-full",
    "eval_limit": None,
    "eval_split": "test",
    "grad_clip": None,
    "label_smoothing": 0.0,
    "loss": "certified_ce",
    "lr": 0.002,
    "margin": 0.15,
    "model": "lipnet_cifar10",
    "model_args": {
        "cert_every": 50
    },
    "momentum": 0.0,
    "nesterov": False,
    "optimizer": "adam",
    "schedule": "cosine",
    "seed": 0,
    "tag": "cpu_e100",
    "task": "classification",
    "temperature": 4.0,
    "train_limit": None,
    "train_split": "train",
    "version": 1,
    "warmup_epochs": 2.0,
    "weight_decay": 0.0
}

_LAYOUT = ('LipFlowNet: pixel unshuffle, conv and dense gradient-flow steps x - h A^T relu(A x + b), 1-Lipschitz '
           'lifts and head; certified L2 Lipschitz bound <= 1 in pixel space')
_TRAIN_SET = {10: "cifar10-full: 49,904 of the 50,000 official train images, exact pixels",
              100: "cifar100-full: all 50,000 official train images, exact pixels"}
_TEST_SET = {10: "CIFAR-10 test, 9,977 of 10,000 images (exact pixels)",
             100: "CIFAR-100 test, all 10,000 images (exact pixels)"}
_MEAN = {10: CIFAR10_MEAN, 100: CIFAR100_MEAN}


def _flagship_cfg(classes: int, *, tag: str, sha256: str, recipe: dict, training: str, certified: dict,
                  clean: float, lipschitz_bound: float, cpu_hours: float, num_params: int,
                  repo: str | None = None) -> WeightsCfg:
    """The cfg of a ``lipnet_cifar<classes>`` tag: inputs in [0, 1] (mean subtracted inside the model), MIT weights
    of this repository's ``hub/dsnet-zoo/<repo>`` (``<arch>`` for the first tag, ``<arch>-<tag>`` for later ones);
    ``training`` says how they were trained (a sentence fragment for the description), ``certified`` maps
    radii (``'36/255'``, ...) to certified accuracy in % on the full test set, ``cpu_hours`` counts every run
    the weights come from."""
    arch = f"lipnet_cifar{classes}"
    repo = repo or arch
    return WeightsCfg(
        tag=tag, hf_hub_id=f"dsnet-zoo/{repo}", sha256=sha256, num_classes=classes, input_size=(3, 32, 32),
        input_range=(0.0, 1.0), norm_mean=_MEAN[classes],  # subtracted inside the model
        dataset=f"cifar{classes}-full", recipe=recipe, model_args=dict(recipe["model_args"]), license="MIT",
        source="dsnet_zoo", origin=f"hub/dsnet-zoo/{repo} (this repository)",
        description=(f"The zoo's certified CIFAR-{classes} flagship ({_LAYOUT}). {training} on the real "
                     f"CIFAR-{classes} train split ({_TRAIN_SET[classes]}) with certified cross-entropy on one CPU "
                     f"thread ({cpu_hours:.2f} CPU-hours); measured on {_TEST_SET[classes]}."),
        metrics={f"cifar{classes}-full": {**{f"certified_l2_{r}": a for r, a in certified.items()}, "clean": clean},
                 "evaluated_on": _TEST_SET[classes], "lipschitz_bound": lipschitz_bound,
                 "training_cpu_hours": cpu_hours},
        num_params=num_params)


def _warm_restart(parent: WeightsCfg, *, tag: str, sha256: str, epochs: int, certified: dict, clean: float,
                  lipschitz_bound: float, run_cpu_hours: float, **recipe_changes) -> WeightsCfg:
    """The cfg of one more cosine cycle from ``parent`` (``init_from``: its weights, a fresh optimizer and EMA,
    ``epochs`` epochs, the parent's recipe otherwise or as ``recipe_changes`` say), in its own hub folder
    ``<arch>-<tag>``. Its CPU-hours add to the parent's."""
    arch = parent.recipe["model"]
    recipe = {**parent.recipe, "epochs": epochs, "init_from": f"{arch}.{parent.tag}", "tag": tag, **recipe_changes}
    p_hours = parent.metrics["training_cpu_hours"]
    p_runs = " with the runs before it" if parent.recipe.get("init_from") else ""
    precision = ", float32" if recipe.get("amp") == "none" else ""
    training = (f"{arch}.{parent.tag} ({parent.recipe['epochs']} epochs, {p_hours:.2f} CPU-hours{p_runs}) trained "
                f"{epochs} more epochs from its weights (a warm restart: fresh Adam optimizer and EMA, peak lr "
                f"{recipe['lr']:g}, cosine{precision}; {run_cpu_hours:.2f} CPU-hours)")
    return _flagship_cfg(parent.num_classes, tag=tag, sha256=sha256, recipe=recipe, training=training,
                         certified=certified, clean=clean, lipschitz_bound=lipschitz_bound,
                         cpu_hours=round(p_hours + run_cpu_hours, 2), num_params=parent.num_params,
                         repo=f"{arch}-{tag}")


_LIPNET_CIFAR10_E100 = _flagship_cfg(
    10, tag="cpu_e100", sha256="c7a79740d4653673872bf60ec090ac10f69d62dd48253f47e7d6407466698ddb",
    recipe=_RECIPE_10, training="Trained 100 epochs",
    certified={"1": 1.43, "108/255": 26.33, "36/255": 53.42, "72/255": 38.95}, clean=68.52,
    lipschitz_bound=0.9999960037559203, cpu_hours=1.24, num_params=2732208)

_LIPNET_CIFAR10_R300 = _warm_restart(
    _LIPNET_CIFAR10_E100, tag="cpu_e100_r300",
    sha256="e0aa3abd402eeeb698d770676df9d2dede20fab1471dbd8014749223b4960cd7", epochs=300,
    certified={"1": 2.08, "108/255": 29.3, "36/255": 56.97, "72/255": 42.29}, clean=71.44,
    lipschitz_bound=0.9999960011660124, run_cpu_hours=3.28)

# registered before the tags it continues from (an architecture's first registered tag is its default, and a
# retired tag names a registered successor). Trained in float32: its CPU (an AMD EPYC, Zen 3, AVX2 only) has no
# fast bf16 path
LIPNET_CIFAR10_DEFAULT = register_pretrained("lipnet_cifar10", _warm_restart(
    _LIPNET_CIFAR10_R300, tag="cpu_e100_r300_r35",
    sha256="f2eda9293c8a4fba074d8562129255b95f79e48a2c469207615929ff1b192b9c", epochs=35,
    certified={"1": 2.07, "108/255": 29.38, "36/255": 57.1, "72/255": 42.36}, clean=71.35,
    lipschitz_bound=0.999996000563695, run_cpu_hours=1.49, lr=0.0002, amp="none"))

# the CIFAR-100 flagship's recipe differs from the CIFAR-10 one only in these fields
_RECIPE_100 = {**_RECIPE_10, "model": "lipnet_cifar100", "dataset": "cifar100-full", "eval_dataset": "cifar100-full",
               "epochs": 100, "tag": "cpu_e100"}

_LIPNET_CIFAR100_E100 = _flagship_cfg(
    100, tag="cpu_e100", sha256="522557f085474ee4ab6ce5c20e9048470196ac0bc1399dd77a32042474fb5972",
    recipe=_RECIPE_100, training="Trained 100 epochs",
    certified={"1": 1.36, "108/255": 11.63, "36/255": 24.8, "72/255": 16.74}, clean=35.63,
    lipschitz_bound=0.9999959992078203, cpu_hours=1.26, num_params=2778378)

LIPNET_CIFAR100_DEFAULT = register_pretrained("lipnet_cifar100", _warm_restart(
    _LIPNET_CIFAR100_E100, tag="cpu_e100_r38",
    sha256="95f8c94e02d98f8ccb984d163ccec5ed9d691e0b09b2b9a80886fa9966bdbe87", epochs=38,
    certified={"1": 1.46, "108/255": 11.56, "36/255": 25.01, "72/255": 16.6}, clean=35.94,
    lipschitz_bound=0.9999960054659228, run_cpu_hours=1.65, lr=0.001, amp="none"))

# retired: on record, no longer hosted; it names the tag that continues from it
LIPNET_CIFAR100_CPU_E100 = register_retired("lipnet_cifar100", _LIPNET_CIFAR100_E100,
                                            successor="lipnet_cifar100.cpu_e100_r38")
LIPNET_CIFAR10_CPU_E100_R300 = register_retired("lipnet_cifar10", _LIPNET_CIFAR10_R300,
                                                successor="lipnet_cifar10.cpu_e100_r300_r35")
LIPNET_CIFAR10_CPU_E100 = register_retired("lipnet_cifar10", _LIPNET_CIFAR10_E100,
                                           successor="lipnet_cifar10.cpu_e100_r300")
