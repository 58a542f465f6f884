"""The model card of a registered version (markdown): what the model is, how it was made, how it scores.

A consumer who finds `models:/m3@champion` should not need the training run to know how to use it (pooling,
instructions, lengths, hybrid weights), what it was trained from and on (recipe, data snapshot), how good it is
per language next to its base model and BM25, and why it is (or is not) the champion. The card is written as
the checkpoint's README.md (so the artifact carries it) and set as the model version's description.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from registry.promotion import DENSE_ONLY, Decision

logger = logging.getLogger(__name__)

BM25 = "bm25"
# Recipe fields shown first, in this order; every other training setting follows, sorted.
RECIPE_FIELDS = (
    "model",
    "max_steps",
    "num_train_epochs",
    "learning_rate",
    "head_learning_rate",
    "temperature",
    "self_distill_start_step",
    "group_size",
    "tokens_per_batch",
    "max_batch_size",
    "query_max_length",
    "passage_max_length",
)
BACKBONE_FIELDS = (
    "model_type",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "vocab_size",
    "max_position_embeddings",
)


def _cell(value: Any) -> str:
    """A table cell: code-formatted, with the characters that would break a markdown table escaped."""
    if value is None:
        return "–"
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return "`" + text.replace("|", "\\|").replace("\n", " ").replace("`", "'") + "`"


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        logger.info("model card: no readable %s (%s)", path, err)
        return {}


def _instruction(text: str | None) -> str:
    return "none" if not text else "`" + json.dumps(text, ensure_ascii=False) + "`"


def profile_section(checkpoint_dir: str | Path, base_model: str | None) -> str:
    """Base model, backbone and the M3 profile from the checkpoint's `config.json` and `m3_config.json`."""
    d = Path(checkpoint_dir)
    m3 = _read_json(d / "m3_config.json")
    hf = _read_json(d / "config.json")
    backbone = ", ".join(f"{k}={hf[k]}" for k in BACKBONE_FIELDS if k in hf) or "unknown"
    origin = m3.get("backbone") or {}
    weights = m3.get("hybrid_weights")
    if weights:
        hybrid = " / ".join(f"{float(w):g}" for w in weights) + " (chosen for this model)"
    else:
        from m3core.modes import HYBRID_PRESETS

        hybrid = (
            " / ".join(f"{w:g}" for w in HYBRID_PRESETS["short"])
            + " (none chosen: the paper's `short` preset)"
        )
    rows = [
        ("base model", _cell(base_model)),
        ("backbone", _cell(backbone)),
        ("backbone origin", ", ".join(f"{k}: {_cell(v)}" for k, v in origin.items()) or "–"),
        ("pooling", _cell(m3.get("pooling", "cls"))),
        ("dense normalized", _cell(m3.get("normalize_dense", True))),
        ("ColBERT dim", _cell(m3.get("colbert_dim") or hf.get("hidden_size"))),
        ("query instruction", _instruction(m3.get("query_instruction"))),
        ("passage instruction", _instruction(m3.get("passage_instruction"))),
        ("query max length", _cell(m3.get("query_max_length", 512))),
        ("passage max length", _cell(m3.get("passage_max_length", 8192))),
        ("hybrid weights (dense / sparse / colbert)", hybrid),
        ("position extension", _cell(m3.get("position_extension"))),
    ]
    if not m3:
        rows.append(("note", "no `m3_config.json`: BGE-M3's defaults apply"))
    lines = ["## Profile", "", "| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]
    return "\n".join(lines)


def _value(results: dict[str, Any] | None, mode: str, metric: str) -> float | None:
    if not results or mode not in results or metric not in results[mode]:
        return None
    return float(results[mode][metric])


def eval_section(
    eval_report: dict[str, Any],
    base_report: dict[str, Any] | None,
    base_has_heads: bool | None,
    metric: str = "ndcg@10",
) -> str:
    """One table: per eval set (language) a `trained` row (with BM25) and a `base` row, then the averages.

    Base values of modes the base model does not really have (fresh random heads) are marked †.
    """
    modes = [m for m in eval_report.get("modes", []) if m != BM25]
    bm25 = BM25 in eval_report.get("modes", [])
    columns = [*modes, *([BM25] if bm25 else [])]
    untrained = base_has_heads is False

    def fmt(value: float | None, mark: bool = False) -> str:
        return "–" if value is None else f"{100 * value:.1f}" + ("†" if mark else "")

    def row(label: str, who: str, n_q: Any, n_d: Any, results: dict | None, base: bool) -> str:
        cells = [
            fmt(_value(results, m, metric), base and untrained and m not in DENSE_ONLY)
            if not (base and m == BM25)
            else ""
            for m in columns
        ]
        return f"| {label} | {who} | {n_q} | {n_d} | " + " | ".join(cells) + " |"

    name = metric.replace("ndcg", "nDCG").replace("recall", "Recall").replace("mrr", "MRR")
    lines = [
        f"## Evaluation ({name} ×100)",
        "",
        "| eval set | model | queries | docs | " + " | ".join(columns) + " |",
        "|---|---|---:|---:|" + "---:|" * len(columns),
    ]
    base_sets = {s["name"]: s for s in (base_report or {}).get("sets", [])}
    for s in eval_report.get("sets", []):
        lines.append(row(s["label"], "trained", s["n_queries"], s["n_docs"], s["results"], False))
        if base_report:
            lines.append(row(s["label"], "base", "", "", base_sets.get(s["name"], {}).get("results"), True))
    averages = [(f"*average {k}*", v, k) for k, v in eval_report.get("average_by_kind", {}).items()]
    averages.append(("**average**", eval_report.get("average"), None))
    for label, results, kind in averages:
        lines.append(row(label, "trained", "", "", results, False))
        if base_report:
            base = (
                base_report.get("average")
                if kind is None
                else base_report.get("average_by_kind", {}).get(kind)
            )
            lines.append(row(label, "base", "", "", base, True))
    notes = ["", "`base`: the base model zero-shot on the same sets; BM25 does not depend on the model."]
    if base_report and untrained:
        notes.append(
            "† the base model has no trained sparse/ColBERT heads: these use random fresh heads and are not "
            "counted for promotion."
        )
    used = [(who, _weights(r)) for who, r in (("trained", eval_report), ("base", base_report)) if r]
    if any(w is not None for _, w in used):
        notes.append(
            "Hybrid weights (dense, sparse, colbert) in this evaluation: "
            + ", ".join(f"{who} {_cell(w)}" for who, w in used)
            + "."
        )
    return "\n".join(lines + notes)


def _weights(report: dict[str, Any]) -> Any:
    """The hybrid weights an evaluation used: the resolved triple when the report has it, else its config's."""
    return report.get("hybrid_weights") or (report.get("config") or {}).get("weights")


def decision_section(decision: Decision | None) -> str:
    if decision is None:
        return "## Promotion\n\nnot decided"
    verdict = "**promoted to champion**" if decision.promote else "**not promoted** (kept as challenger)"
    return f"## Promotion\n\n{verdict}: {decision.reason}"


def recipe_section(train_config: dict[str, Any]) -> str:
    if not train_config:
        return "## Recipe\n\nno training configuration recorded"
    keys = [k for k in RECIPE_FIELDS if k in train_config]
    keys += sorted(k for k in train_config if k not in RECIPE_FIELDS)
    lines = ["## Recipe", "", "| setting | value |", "|---|---|"]
    lines += [f"| {k} | {_cell(train_config[k])} |" for k in keys]
    return "\n".join(lines)


def model_card(
    checkpoint_dir: str | Path,
    eval_report: dict[str, Any],
    base_report: dict[str, Any] | None,
    train_config: dict[str, Any] | None,
    data_snapshot: str,
    decision: Decision | None,
    run_params: dict[str, Any] | None = None,
    *,
    base_has_heads: bool | None = None,
) -> str:
    """The card (markdown). Most useful first: the registry keeps a cut version when it is very long.

    `base_has_heads`: whether the base model has trained sparse/ColBERT heads (None: unknown, nothing marked).
    """
    train_config = train_config or {}
    base_model = train_config.get("model")
    title = f"# M3 model trained from `{base_model}`" if base_model else "# M3 model"
    sections = [
        title,
        profile_section(checkpoint_dir, base_model),
        eval_section(eval_report, base_report, base_has_heads),
        decision_section(decision),
        recipe_section(train_config),
        f"## Data\n\nsnapshot: {_cell(data_snapshot or 'unknown')}",
    ]
    if run_params:
        body = json.dumps(run_params, indent=2, sort_keys=True, ensure_ascii=False, default=str)
        sections.append(f"## Run parameters\n\n```json\n{body}\n```")
    return "\n\n".join(sections) + "\n"
