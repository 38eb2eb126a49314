"""The zoo's own certified flagship weights: ``lipnet_cifar10`` and ``lipnet_cifar100`` (:class:`~dsnet_zoo.models.lipflow.LipFlowNet`),
trained by ``dsnet-zoo train`` on the real CIFAR train splits on a 2-core CPU (one thread per run).

The files live in the checkout's ``hub/dsnet-zoo/<arch>/`` (Hugging Face repo layout) and are pinned by
their sha256 (the repos do not exist on the Hub yet, so there is no commit revision to pin: the sha256 is
the pin). ``dsnet-zoo train ARCH.TAG --out DIR`` reruns the recorded recipe (bit for bit on CPU with one
thread, ``OMP_NUM_THREADS=1``, and the same library versions). Metrics are the measured clean and
certified (L2, from the model's certified Lipschitz bound) accuracies on the full real test set.
"""
from __future__ import annotations

from ..hub import WeightsCfg
from ..registry import register_pretrained
from . import lipflow  # noqa: F401  (registers the architectures first)
from .lipnet import CIFAR10_MEAN, CIFAR100_MEAN

__all__ = ['LIPNET_CIFAR10_DEFAULT', 'LIPNET_CIFAR100_DEFAULT']

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
    "epochs": 50,
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
    "tag": "cpu_e50",
    "task": "classification",
    "temperature": 4.0,
    "train_limit": None,
    "train_split": "train",
    "version": 1,
    "warmup_epochs": 2.0,
    "weight_decay": 0.0
}

LIPNET_CIFAR10_DEFAULT = register_pretrained("lipnet_cifar10", WeightsCfg(
    tag='cpu_e50',
    hf_hub_id="dsnet-zoo/lipnet_cifar10",
    sha256='9280726976832648a63940269ed582b3c2219afd14a4c0d3455bbdc0ffc9c1c5',
    num_classes=10,
    input_size=(3, 32, 32),
    input_range=(0.0, 1.0),
    norm_mean=CIFAR10_MEAN,  # subtracted inside the model
    dataset='cifar10-full',
    recipe=_RECIPE_10,
    model_args={'cert_every': 50},
    license="MIT",
    source="dsnet_zoo",
    origin="hub/dsnet-zoo/lipnet_cifar10 (this repository)",
    description=("The zoo's certified CIFAR-10 flagship (LipFlowNet: pixel unshuffle, conv and dense gradient-flow "
                 'steps x - h A^T relu(A x + b), 1-Lipschitz lifts and head; certified L2 Lipschitz bound <= 1 in '
                 'pixel space). Trained 50 epochs on the real CIFAR-10 train split (cifar10-full: 49,904 of the 50,000'
                 ' official train images, exact pixels) with certified cross-entropy on one CPU thread (0.93 CPU-'
                 'hours); measured on CIFAR-10 test, 9,977 of 10,000 images (exact pixels).'),
    metrics={
        "cifar10-full": {
            "certified_l2_1": 1.23,
            "certified_l2_108/255": 24.38,
            "certified_l2_36/255": 50.94,
            "certified_l2_72/255": 36.26,
            "clean": 66.33
        },
        "evaluated_on": "CIFAR-10 test, 9,977 of 10,000 images (exact pixels)",
        "lipschitz_bound": 0.9999959975239174,
        "training_cpu_hours": 0.93
    },
    num_params=2732208,
))

# the CIFAR-100 flagship's recipe differs from the CIFAR-10 one only in these fields
_RECIPE_100 = {**_RECIPE_10, "model": "lipnet_cifar100", "dataset": "cifar100-full", "eval_dataset": "cifar100-full",
               "epochs": 30, "tag": "cpu_e30"}

LIPNET_CIFAR100_DEFAULT = register_pretrained("lipnet_cifar100", WeightsCfg(
    tag='cpu_e30',
    hf_hub_id="dsnet-zoo/lipnet_cifar100",
    sha256='378e3fb611c01e182820f3ad5f4ca7f0e140845aa2b21c144949b043e4de3dd6',
    num_classes=100,
    input_size=(3, 32, 32),
    input_range=(0.0, 1.0),
    norm_mean=CIFAR100_MEAN,  # subtracted inside the model
    dataset='cifar100-full',
    recipe=_RECIPE_100,
    model_args={'cert_every': 50},
    license="MIT",
    source="dsnet_zoo",
    origin="hub/dsnet-zoo/lipnet_cifar100 (this repository)",
    description=("The zoo's certified CIFAR-100 flagship (LipFlowNet: pixel unshuffle, conv and dense gradient-flow "
                 'steps x - h A^T relu(A x + b), 1-Lipschitz lifts and head; certified L2 Lipschitz bound <= 1 in '
                 'pixel space). Trained 30 epochs on the real CIFAR-100 train split (cifar100-full: all 50,000 '
                 'official train images, exact pixels) with certified cross-entropy on one CPU thread (0.57 CPU-'
                 'hours); measured on CIFAR-100 test, all 10,000 images (exact pixels).'),
    metrics={
        "cifar100-full": {
            "certified_l2_1": 1.71,
            "certified_l2_108/255": 10.97,
            "certified_l2_36/255": 22.04,
            "certified_l2_72/255": 15.39,
            "clean": 30.44
        },
        "evaluated_on": "CIFAR-100 test, all 10,000 images (exact pixels)",
        "lipschitz_bound": 0.9999960019434847,
        "training_cpu_hours": 0.57
    },
    num_params=2778378,
))
