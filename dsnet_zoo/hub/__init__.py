"""Weights and the Hugging Face Hub: metadata, resolution, checks, publishing and a local Hub server."""
from .weights import (CITATION_PAPER, WEIGHTS_DIR_ENV, ChecksumError, WeightsCfg, WeightsError,
                      checkout_hub_dir, load_into_model, load_state_dict_file, load_weights,
                      resolve_weights_file, sha256_file)
from .publish import atomic_write_bytes, read_hub_config, render_model_card, save_state_dict, write_hub_repo

__all__ = [
    "CITATION_PAPER", "WEIGHTS_DIR_ENV", "ChecksumError", "WeightsCfg", "WeightsError",
    "checkout_hub_dir", "load_into_model", "load_state_dict_file", "load_weights",
    "resolve_weights_file", "sha256_file", "atomic_write_bytes", "read_hub_config",
    "render_model_card", "save_state_dict", "write_hub_repo",
]
