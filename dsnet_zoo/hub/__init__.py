"""Weights and the Hugging Face Hub: metadata, resolution, checks, publishing and a local Hub server."""
from .weights import (CITATION_PAPER, WEIGHTS_DIR_ENV, ChecksumError, WeightsCfg, WeightsError,
                      checkout_hub_dir, load_into_model, load_state_dict_file, load_weights,
                      resolve_weights_file, sha256_file)

__all__ = [
    "CITATION_PAPER", "WEIGHTS_DIR_ENV", "ChecksumError", "WeightsCfg", "WeightsError",
    "checkout_hub_dir", "load_into_model", "load_state_dict_file", "load_weights",
    "resolve_weights_file", "sha256_file",
]
