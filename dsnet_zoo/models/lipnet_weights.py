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

LIPNET_CIFAR10_DEFAULT = register_pretrained("lipnet_cifar10", WeightsCfg(
    tag='cpu_e100',
    hf_hub_id="dsnet-zoo/lipnet_cifar10",
    sha256='c7a79740d4653673872bf60ec090ac10f69d62dd48253f47e7d6407466698ddb',
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
                 'pixel space). Trained 100 epochs on the real CIFAR-10 train split (cifar10-full: 49,904 of the 50,000'
                 ' official train images, exact pixels) with certified cross-entropy on one CPU thread (1.24 CPU-'
                 'hours); measured on CIFAR-10 test, 9,977 of 10,000 images (exact pixels).'),
    metrics={
        "cifar10-full": {
            "certified_l2_1": 1.43,
            "certified_l2_108/255": 26.33,
            "certified_l2_36/255": 53.42,
            "certified_l2_72/255": 38.95,
            "clean": 68.52
        },
        "evaluated_on": "CIFAR-10 test, 9,977 of 10,000 images (exact pixels)",
        "lipschitz_bound": 0.9999960037559203,
        "training_cpu_hours": 1.24
    },
    num_params=2732208,
))

# the CIFAR-100 flagship's recipe differs from the CIFAR-10 one only in these fields
_RECIPE_100 = {**_RECIPE_10, "model": "lipnet_cifar100", "dataset": "cifar100-full", "eval_dataset": "cifar100-full",
               "epochs": 100, "tag": "cpu_e100"}

LIPNET_CIFAR100_DEFAULT = register_pretrained("lipnet_cifar100", WeightsCfg(
    tag='cpu_e100',
    hf_hub_id="dsnet-zoo/lipnet_cifar100",
    sha256='522557f085474ee4ab6ce5c20e9048470196ac0bc1399dd77a32042474fb5972',
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
                 'pixel space). Trained 100 epochs on the real CIFAR-100 train split (cifar100-full: all 50,000 '
                 'official train images, exact pixels) with certified cross-entropy on one CPU thread (1.26 CPU-'
                 'hours); measured on CIFAR-100 test, all 10,000 images (exact pixels).'),
    metrics={
        "cifar100-full": {
            "certified_l2_1": 1.36,
            "certified_l2_108/255": 11.63,
            "certified_l2_36/255": 24.8,
            "certified_l2_72/255": 16.74,
            "clean": 35.63
        },
        "evaluated_on": "CIFAR-100 test, all 10,000 images (exact pixels)",
        "lipschitz_bound": 0.9999959992078203,
        "training_cpu_hours": 1.26
    },
    num_params=2778378,
))
