"""The promotion policy: when does a newly registered model become the `champion`?

A candidate is promoted when its configured metric (default: mean nDCG@10 of the `all` hybrid over the eval
sets) is at least the current champion's on the *same* eval set (+ `min_improvement`) and not below its base
model evaluated zero-shot on that set. With no champion yet, it must beat the base model's reference +
`min_improvement` (DESIGN: never promote a model that evaluates worse than its base).

The base reference is the base model's best *real* mode. A plain backbone (e.g. multilingual-e5-small) gets
randomly initialized sparse and ColBERT heads when loaded; those heads are not the base model's, and a fresh
ColBERT head over good token states scores misleadingly high. So only `dense` counts for a base without head
files; the head modes and the hybrids count only when the base directory has trained heads.

Everything here is pure (no MLflow, no files): `registry.register` gathers the numbers and records the decision.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from m3core.modes import MODES, Mode

DENSE_ONLY: tuple[Mode, ...] = ("dense",)
# The modes a base model with its own trained heads is measured by (its best one is the reference): all of them.
WITH_HEADS: tuple[Mode, ...] = MODES


@dataclass(frozen=True)
class PromotionPolicy:
    metric: str = "average.all.ndcg@10"  # dotted path into the evaluation report: <section>.<mode>.<metric>
    min_improvement: float = 0.0


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


class BaseReference(NamedTuple):
    """The base model's best real mode and its value of the policy metric (zero-shot, same eval set)."""

    mode: str
    value: float


def metric_value(report: dict[str, Any], path: str) -> float:
    """`report["average"]["all"]["ndcg@10"]` for `"average.all.ndcg@10"`; a clear error when absent."""
    node: Any = report
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(f"the evaluation report has no {path!r} (missing {part!r})")
        node = node[part]
    return float(node)


def with_mode(metric: str, mode: str) -> str:
    """The same metric path for another mode: the mode is the second-to-last part.

    >>> with_mode("average.all.ndcg@10", "dense")
    'average.dense.ndcg@10'
    >>> with_mode("average_by_kind.monolingual.all.mrr@10", "colbert")
    'average_by_kind.monolingual.colbert.mrr@10'
    """
    parts = metric.split(".")
    if len(parts) < 2:
        raise ValueError(f"metric {metric!r} is not a '<section>.<mode>.<metric>' path into the report")
    return ".".join([*parts[:-2], mode, parts[-1]])


def base_reference(base_report: dict[str, Any], metric: str, base_has_heads: bool) -> BaseReference:
    """The base model's best real mode for `metric` (see the module docstring for which modes are real).

    >>> r = {"average": {"dense": {"ndcg@10": 0.30}, "colbert": {"ndcg@10": 0.55}, "all": {"ndcg@10": 0.50}}}
    >>> base_reference(r, "average.all.ndcg@10", base_has_heads=False)
    BaseReference(mode='dense', value=0.3)
    >>> base_reference(r, "average.all.ndcg@10", base_has_heads=True)
    BaseReference(mode='colbert', value=0.55)
    >>> base_reference({"average": {"sparse": {"ndcg@10": 0.4}}}, "average.all.ndcg@10", False)
    Traceback (most recent call last):
    ...
    KeyError: "the base model's report has none of its real modes ['dense'] for 'average.all.ndcg@10'"
    """
    modes = WITH_HEADS if base_has_heads else DENSE_ONLY
    values = {}
    for mode in modes:
        try:
            values[mode] = metric_value(base_report, with_mode(metric, mode))
        except KeyError:
            continue  # a mode the evaluation did not run
    if not values:
        raise KeyError(f"the base model's report has none of its real modes {list(modes)} for {metric!r}")
    best = max(values, key=lambda m: values[m])  # ties: the first in WITH_HEADS order
    return BaseReference(best, values[best])


def decide(
    policy: PromotionPolicy,
    candidate: float,
    eval_set_id: str,
    champion: tuple[float, str] | None = None,
    base: BaseReference | None = None,
) -> Decision:
    """Compare `candidate` with the champion `(value, eval_set_id)` and with the `base` reference.

    >>> p = PromotionPolicy()
    >>> decide(p, 0.42, "set-a", champion=(0.40, "set-a"))
    Decision(promote=True, reason='average.all.ndcg@10 0.4200 >= champion 0.4000 + 0.0 on eval set set-a')
    >>> decide(p, 0.38, "set-a", champion=(0.40, "set-a")).promote
    False
    >>> decide(p, 0.50, "set-b", champion=(0.40, "set-a")).reason
    'champion was evaluated on eval set set-a, candidate on set-b: not comparable; re-evaluate the champion'
    >>> decide(p, 0.45, "set-a", champion=(0.40, "set-a"), base=BaseReference("dense", 0.47)).reason
    'average.all.ndcg@10 0.4500 >= champion 0.4000 but < base model 0.4700 (dense, zero-shot) on eval set set-a'
    >>> decide(p, 0.30, "set-a", base=BaseReference("dense", 0.35)).reason
    'no champion yet; average.all.ndcg@10 0.3000 < base model 0.3500 (dense, zero-shot) + 0.0 on eval set set-a'
    >>> decide(PromotionPolicy(min_improvement=0.01), 0.36, "set-a", base=BaseReference("colbert", 0.35))
    ... # doctest: +NORMALIZE_WHITESPACE
    Decision(promote=True, reason='no champion yet; average.all.ndcg@10 0.3600 >= base model 0.3500
        (colbert, zero-shot) + 0.01 on eval set set-a')
    """
    m, need = policy.metric, policy.min_improvement
    on_set = f"on eval set {eval_set_id}"
    base_text = f"base model {base.value:.4f} ({base.mode}, zero-shot)" if base is not None else ""
    if champion is not None:
        value, champion_set = champion
        if champion_set != eval_set_id:
            return Decision(
                False,
                f"champion was evaluated on eval set {champion_set}, candidate on {eval_set_id}: not comparable; "
                "re-evaluate the champion",
            )
        if candidate < value + need:
            return Decision(False, f"{m} {candidate:.4f} < champion {value:.4f} + {need} {on_set}")
        if base is not None and candidate < base.value:
            return Decision(False, f"{m} {candidate:.4f} >= champion {value:.4f} but < {base_text} {on_set}")
        return Decision(True, f"{m} {candidate:.4f} >= champion {value:.4f} + {need} {on_set}")
    if base is not None:
        if candidate >= base.value + need:
            return Decision(True, f"no champion yet; {m} {candidate:.4f} >= {base_text} + {need} {on_set}")
        return Decision(False, f"no champion yet; {m} {candidate:.4f} < {base_text} + {need} {on_set}")
    return Decision(True, f"no champion yet and no base model score; {m} {candidate:.4f} {on_set}")
