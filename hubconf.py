"""torch.hub entry points: one per dsnet_zoo architecture, generated from the registry.

    torch.hub.load("OWNER/dsnet_zoo", "lipnet_cifar10", pretrained=True, trust_repo=True)
    torch.hub.load("path/to/checkout", "lipnet_cifar10", source="local", pretrained=True)

Each entry point takes ``pretrained``, ``tag`` (a pretrained tag; default: the architecture's
default tag), ``num_classes``, ``checkpoint_path`` and the architecture's keyword arguments,
exactly as :func:`dsnet_zoo.create`.
"""
dependencies = ["torch", "torchvision", "timm", "huggingface_hub", "safetensors"]

import dsnet_zoo as _dsnet_zoo


def _entrypoint(_arch):
    def entry(pretrained=False, tag=None, **kwargs):
        name = f"{_arch}.{tag}" if tag else _arch
        return _dsnet_zoo.create(name, pretrained=pretrained, **kwargs)

    info = _dsnet_zoo.registry.arch_info(_arch)
    tags = _dsnet_zoo.registry.get_pretrained_cfgs(_arch)
    entry.__name__ = entry.__qualname__ = _arch
    entry.__doc__ = (
        f"{_arch}: {info['description'] or info['family']} (family {info['family']}, dataset {info['dataset']}).\n\n"
        f"Pretrained tags: {', '.join(tags) or 'none yet'}. Arguments as dsnet_zoo.create: "
        "pretrained=False, tag=None, num_classes=None, checkpoint_path=None, **model_kwargs."
    )
    return entry


def _install_entrypoints():
    for arch in _dsnet_zoo.list_models():
        globals()[arch] = _entrypoint(arch)


_install_entrypoints()
