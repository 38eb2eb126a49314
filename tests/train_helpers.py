"""A tiny classifier and a tiny synthetic image set for the training tests (CI speed).

:func:`register` adds them to the registries (idempotent) and :func:`unregister` removes them, so
other test modules that iterate over every registered architecture never see them. The test
modules use a module-scoped fixture; the DDP worker registers in its own processes.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dsnet_zoo import registry
from dsnet_zoo.models import ZooClassifier, build_model
from dsnet_zoo.training import Recipe, TrainData, register_train_dataset

ARCH = "tinytrain_net"
LINEAR_ARCH = "tinytrain_linear"
DATASET = "tiny-synthetic"


class TinyNet(ZooClassifier):
    """conv 3->8 (3x3), GroupNorm, ReLU, optional dropout, global average pool, linear 8->4."""

    def __init__(self, num_classes: int = 4, dropout: float = 0.0, width: int = 8):
        super().__init__()
        self.num_classes, self.num_features = num_classes, width
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.norm = nn.GroupNorm(2, width)
        self.drop = nn.Dropout(dropout)
        self.head = self._make_head(num_classes)

    def _make_head(self, n):
        return nn.Linear(self.num_features, n)

    def forward_features(self, x):
        return self.drop(torch.relu(self.norm(self.conv(x))))

    def forward_head(self, x, pre_logits=False):
        x = x.mean(dim=(2, 3))
        return x if pre_logits else self.head(x)


def tinytrain_net(pretrained=False, **kwargs):
    return build_model(TinyNet, ARCH, pretrained, default_num_classes=4, **kwargs)



class TinyLinear(ZooClassifier):
    """flatten -> linear; its certified L2 Lipschitz bound is the exact spectral norm of the weight."""

    def __init__(self, num_classes: int = 4):
        super().__init__()
        self.num_classes, self.num_features = num_classes, 3 * 8 * 8
        self.head = self._make_head(num_classes)

    def _make_head(self, n):
        return nn.Linear(self.num_features, n)

    def forward_features(self, x):
        # average-pool any input to 8x8 (operator norm <= 1, identity on 8x8), so the bound below holds
        return F.adaptive_avg_pool2d(x, 8).flatten(1)

    def lipschitz_upper_bound(self):
        return float(torch.linalg.matrix_norm(self.head.weight.detach().double(), 2))


def tinytrain_linear(pretrained=False, **kwargs):
    return build_model(TinyLinear, LINEAR_ARCH, pretrained, default_num_classes=4, **kwargs)



def make_images(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 8x8 images whose label is the brightest quadrant of the red channel (learnable)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, 8, 8), generator=g, dtype=torch.int64)
    y = torch.randint(0, 4, (n,), generator=g)
    for i in range(n):
        r, c = divmod(int(y[i]), 2)
        x[i, 0, 4 * r:4 * r + 4, 4 * c:4 * c + 4] = (x[i, 0, 4 * r:4 * r + 4, 4 * c:4 * c + 4] // 2 + 128)
    return x.to(torch.uint8), y


def _load(recipe, data_dir) -> TrainData:
    n = int(recipe.dataset_args.get("n", 64))
    x, y = make_images(n, 1)
    xe, ye = make_images(32, 2)
    return TrainData(x, y, xe, ye, "classification", 4, {"synthetic": True})


def register() -> None:
    for name, fn in ((ARCH, tinytrain_net), (LINEAR_ARCH, tinytrain_linear)):
        if not registry.is_model(name):
            registry.register_model(family="tinytrain", dataset=DATASET)(fn)
    register_train_dataset(DATASET, _load, overwrite=True)


def unregister() -> None:
    from dsnet_zoo.training import data as training_data

    for name in (ARCH, LINEAR_ARCH):
        for table in (registry._entrypoints, registry._arch_meta, registry._pretrained, registry._retired):
            table.pop(name, None)
    training_data._LOADERS.pop(DATASET, None)


def tiny_recipe(**kw) -> Recipe:
    base = dict(model=ARCH, dataset=DATASET, epochs=2, batch_size=16, lr=0.05, loss="ce",
                augment="crop_flip", ema=0.9, schedule="cosine", warmup_epochs=0.5, optimizer="sgd",
                momentum=0.9, weight_decay=1e-4, dataset_args={"n": 64})
    base.update(kw)
    return Recipe(**base)
