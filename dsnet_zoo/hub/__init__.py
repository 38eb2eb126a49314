"""Weights and the Hugging Face Hub: metadata, resolution, checks, repo folders and a local Hub server."""
from .weights import (CITATION_PAPER, WEIGHTS_DIR_ENV, ChecksumError, WeightsCfg, WeightsError,
                      checkout_hub_dir, load_into_model, load_state_dict_file, load_weights,
                      resolve_weights_file, sha256_file)
from .repo import (hub_license, read_hub_config, read_hub_folder, render_model_card, safetensors_bytes,
                   save_state_dict, write_hub_repo)
from ..utils import atomic_write_bytes

__all__ = [
    "CITATION_PAPER", "WEIGHTS_DIR_ENV", "ChecksumError", "WeightsCfg", "WeightsError",
    "checkout_hub_dir", "load_into_model", "load_state_dict_file", "load_weights",
    "resolve_weights_file", "sha256_file", "atomic_write_bytes", "hub_license", "read_hub_config",
    "read_hub_folder", "render_model_card", "safetensors_bytes", "save_state_dict", "write_hub_repo",
]
