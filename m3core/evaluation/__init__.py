"""Evaluation: metrics, BEIR-layout eval sets, the BM25 baseline, per-language reports over all M3 modes."""

from m3core.evaluation.beir import EvalSet, load_eval_set, load_eval_sets, write_eval_set
from m3core.evaluation.evaluate import EvalConfig, evaluate
from m3core.evaluation.metrics import METRICS, evaluate_run
from m3core.evaluation.report import markdown_table, write_report

__all__ = [
    "METRICS",
    "EvalConfig",
    "EvalSet",
    "evaluate",
    "evaluate_run",
    "load_eval_set",
    "load_eval_sets",
    "markdown_table",
    "write_eval_set",
    "write_report",
]
