"""Evaluation: clean accuracy, certified L2 accuracy, AutoAttack and the paper's PGD protocol.

>>> from dsnet_zoo.evaluation import evaluate
>>> result = evaluate("lipnet_cifar10", "cifar10-real", metrics=["clean", "certified"], out="r.json")
"""
from .certify import Certifier, certified_radii, describe_bound
from .metrics import (DEFAULT_CERT_EPS, PAPER_ATTACK_EPS, PAPER_EPS, Column, Metric, format_eps, get_metric,
                      list_metrics, parse_eps, register_metric)
from .runner import CrossCheckError, atomic_write_json, cross_check, evaluate, load_for_eval, result_stem

__all__ = [
    "Certifier", "certified_radii", "describe_bound", "DEFAULT_CERT_EPS", "PAPER_ATTACK_EPS", "PAPER_EPS", "Column",
    "Metric", "format_eps", "get_metric", "list_metrics", "parse_eps", "register_metric", "CrossCheckError",
    "atomic_write_json", "cross_check", "evaluate", "load_for_eval", "result_stem",
]
