"""The promotion policy: when does a newly registered model become the `champion`?

A candidate is promoted when its configured metric (default: mean nDCG@10 of the `all` hybrid over the eval
sets) is at least the current champion's on the *same* eval set. With no champion yet, it must not be worse than
its base model evaluated zero-shot on that set (DESIGN: never promote a model that evaluates worse than its
base). Every decision carries its reason, which is recorded on the model version.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PromotionPolicy:
    metric: str = "average.all.ndcg@10"  # dotted path into the evaluation report
    min_improvement: float = 0.0


@dataclass(frozen=True)
class Decision:
    promote: bool
    reason: str


def metric_value(report: dict[str, Any], path: str) -> float:
    """`report["average"]["all"]["ndcg@10"]` for `"average.all.ndcg@10"`; a clear error when absent."""
    node: Any = report
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(f"the evaluation report has no {path!r} (missing {part!r})")
        node = node[part]
    return float(node)


def decide(
    policy: PromotionPolicy,
    candidate: float,
    eval_set_id: str,
    champion: tuple[float, str] | None = None,
    base: float | None = None,
) -> Decision:
    """Compare `candidate` with the champion `(value, eval_set_id)` or, without one, with `base`.

    >>> decide(PromotionPolicy(), 0.42, "set-a", champion=(0.40, "set-a"))
    Decision(promote=True, reason='average.all.ndcg@10 0.4200 >= champion 0.4000 on eval set set-a')
    >>> decide(PromotionPolicy(), 0.38, "set-a", champion=(0.40, "set-a")).promote
    False
    >>> decide(PromotionPolicy(), 0.50, "set-b", champion=(0.40, "set-a")).reason
    'champion was evaluated on eval set set-a, candidate on set-b: not comparable; re-evaluate the champion'
    >>> decide(PromotionPolicy(), 0.30, "set-a", base=0.35).promote
    False
    """
    m, need = policy.metric, policy.min_improvement
    if champion is not None:
        value, champion_set = champion
        if champion_set != eval_set_id:
            return Decision(
                False,
                f"champion was evaluated on eval set {champion_set}, candidate on {eval_set_id}: not comparable; "
                "re-evaluate the champion",
            )
        if candidate >= value + need:
            return Decision(True, f"{m} {candidate:.4f} >= champion {value:.4f} on eval set {eval_set_id}")
        return Decision(
            False, f"{m} {candidate:.4f} < champion {value:.4f} + {need} on eval set {eval_set_id}"
        )
    if base is not None:
        if candidate >= base + need:
            return Decision(
                True,
                f"no champion yet; {m} {candidate:.4f} >= base model {base:.4f} on eval set {eval_set_id}",
            )
        return Decision(
            False,
            f"no champion yet, but {m} {candidate:.4f} < base model {base:.4f} on eval set {eval_set_id}",
        )
    return Decision(
        True, f"no champion yet and no base model score; {m} {candidate:.4f} on eval set {eval_set_id}"
    )
