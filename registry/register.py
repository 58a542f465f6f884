"""Register a trained checkpoint as a new model version, alias it `challenger`, and apply the promotion policy.

Tags on every version: data snapshot, config hash, code version, eval set id and metrics (also keyed by eval
set id, `eval.<set_id>.average.<mode>.<metric>`, which is where a champion's re-evaluations on later eval sets
go too); the promotion decision and its reason; the base reference. The model card (`registry.model_card`)
is the checkpoint's README.md and the version's description. Aliases only (MLflow stages are deprecated).

Registration is resumable. A version is created with the checkpoint's content digest and `m3.registration:
pending` among its creation tags (one request, so there is no version without them); it is marked `complete`
only after its tags, aliases and description are all set. A registration that did not complete (the process
was killed, the tracking server went away, a task retry) is finished by the next registration of the same
checkpoint instead of adding a second version; one that completed is never touched, and registering the same
checkpoint again then adds a version (a deliberate rerun). The decision is a tag written before any alias
moves, so finishing a registration applies the decision that was made, never a new one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from mlflow import MlflowClient
from mlflow.entities.model_registry import ModelVersion

from m3core.model import has_trained_heads
from registry.aliases import version_for_alias
from registry.log_model import log_m3_model
from registry.model_card import model_card
from registry.promotion import BaseReference, Decision, PromotionPolicy, base_reference, decide, metric_value

logger = logging.getLogger(__name__)

CHALLENGER, CHAMPION = "challenger", "champion"
CARD_FILE = "README.md"
# The resumable-registration tags (see the module docstring).
DIGEST_TAG, STATE_TAG = "m3.checkpoint_digest", "m3.registration"
PENDING, COMPLETE = "pending", "complete"
# The SQL model registry stores a version's description as VARCHAR(5000) (Postgres enforces it).
MAX_DESCRIPTION = 5000


@dataclass(frozen=True)
class Champion:
    """The current champion and what is known of it for one eval set.

    `value` is the policy metric on `eval_set_id`; when the champion was never evaluated on the eval set asked
    about, `eval_set_id` is the set it *was* evaluated on (so the decision can say they are not comparable) and
    `value` its metric there, or None when it has no such tag at all.
    """

    version: str
    value: float | None
    eval_set_id: str

    def comparable_on(self, eval_set_id: str) -> bool:
        return self.value is not None and self.eval_set_id == eval_set_id


@dataclass
class Registration:
    name: str
    version: str
    model_uri: str
    run_id: str
    decision: Decision
    candidate_value: float | None = None
    champion: Champion | None = None
    base: BaseReference | None = None


def code_version() -> str:
    """The git commit of this checkout (with `-dirty` for uncommitted changes), or `unknown`."""
    here = Path(__file__).resolve().parent
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"], cwd=here, capture_output=True, text=True, check=True
        ).stdout.strip()
        return rev + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def tag_key(name: str) -> str:
    """A valid MLflow tag key: `eval.average.dense+sparse.ndcg@10` → `eval.average.dense_plus_sparse.ndcg_at_10`."""
    return re.sub(r"[^\w\-. :/]", "_", name.replace("@", "_at_").replace("+", "_plus_"))


def eval_tag(eval_set_id: str, metric: str) -> str:
    """The tag key of `metric` measured on one eval set: `eval.<set_id>.average.all.ndcg_at_10`."""
    return tag_key(f"eval.{eval_set_id}.{metric}")


def checkpoint_digest(checkpoint: str | Path) -> str:
    """Content digest of a checkpoint: every file's path and bytes except the card, which registration writes."""
    root = Path(checkpoint)
    h = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file() and p.relative_to(root) != Path(CARD_FILE)):
        h.update(str(f.relative_to(root)).encode() + b"\0")
        with f.open("rb") as fh:
            h.update(hashlib.file_digest(fh, "sha256").digest())
    return h.hexdigest()[:32]


def unfinished_registration(name: str, digest: str, client: MlflowClient) -> ModelVersion | None:
    """The version of `name` whose registration of the checkpoint with `digest` did not complete, if any."""
    try:
        found = client.search_model_versions(f"name = '{name}' and tags.`{DIGEST_TAG}` = '{digest}'")
    except mlflow.exceptions.RestException as err:  # the registered model does not exist yet
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise
    unfinished = [mv for mv in found if mv.tags.get(STATE_TAG) != COMPLETE]
    return max(unfinished, key=lambda mv: int(mv.version), default=None)


def config_hash(config: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def eval_tags(eval_report: dict[str, Any], eval_set_id: str, metric: str) -> dict[str, str]:
    """Tags of a report's averages (and the policy metric), keyed by the eval set they were measured on."""
    tags = {eval_tag(eval_set_id, metric): f"{metric_value(eval_report, metric):.6f}"}
    for mode, values in eval_report.get("average", {}).items():
        for name, value in values.items():
            tags[eval_tag(eval_set_id, f"average.{mode}.{name}")] = f"{float(value):.6f}"
    return tags


def record_evaluation(
    name: str,
    version: str,
    eval_report: dict[str, Any],
    eval_set_id: str,
    metric: str,
    client: MlflowClient | None = None,
) -> None:
    """Tag `name` v`version` with its metrics on `eval_set_id`, so no later run re-evaluates it on that set."""
    client = client or MlflowClient()
    for key, value in eval_tags(eval_report, eval_set_id, metric).items():
        client.set_model_version_tag(name, version, key, value)
    logger.info(
        "%s v%s on eval set %s: %s %.4f",
        name,
        version,
        eval_set_id,
        metric,
        metric_value(eval_report, metric),
    )


def find_champion(
    name: str, metric: str, eval_set_id: str, client: MlflowClient | None = None
) -> Champion | None:
    """The champion's `metric` on `eval_set_id` if it has been measured there, else what its tags do say."""
    mv = version_for_alias(name, CHAMPION, client)
    if mv is None:
        return None
    tags = mv.tags
    keyed = tags.get(eval_tag(eval_set_id, metric))
    if keyed is not None:
        return Champion(str(mv.version), float(keyed), eval_set_id)
    own_set = tags.get("eval_set_id", "")
    own = tags.get(tag_key(f"eval.{metric}"))  # the metric on its own registration set
    if own is not None:
        return Champion(str(mv.version), float(own), own_set)
    keyed_own = tags.get(eval_tag(own_set, metric))
    return Champion(str(mv.version), None if keyed_own is None else float(keyed_own), own_set)


def card_description(card: str, limit: int = MAX_DESCRIPTION) -> str:
    """The card as a version description: cut at a line within the registry's limit when it is longer."""
    if len(card) <= limit:
        return card
    note = f"\n\n… (cut to fit the registry; the full card is {CARD_FILE} in the checkpoint artifact)"
    kept = card[: limit - len(note)]
    return kept[: kept.rfind("\n")] + note


def register_and_promote(
    checkpoint: str | Path,
    name: str,
    eval_report: dict[str, Any],
    eval_set_id: str,
    *,
    policy: PromotionPolicy | None = None,
    base_report: dict[str, Any] | None = None,
    base_model: str | Path | None = None,
    base_has_heads: bool | None = None,
    train_config: dict[str, Any] | None = None,
    data_snapshot: str = "",
    run_params: dict[str, Any] | None = None,
    description: str = "",
    onnx: bool = True,
) -> Registration:
    """Log + register `checkpoint`, alias it `challenger`, and move `champion` to it if the policy says so.

    The champion is compared on `eval_set_id` only: when it was evaluated on another set, the caller
    re-evaluates it first and records that with `record_evaluation` (the `register_and_promote` flow does);
    otherwise the decision is "not comparable". `base_has_heads` defaults to looking at `base_model` (or the
    training config's `model`); with neither known only the base's dense mode counts. A registration of this
    checkpoint that did not complete is finished instead of adding a version (see the module docstring).
    `onnx`: log the checkpoint's ONNX export with it (`registry.log_model`), which the pyfunc serves on CPU.
    """
    policy = policy or PromotionPolicy()
    client = MlflowClient()
    train_config = train_config or {}
    candidate = metric_value(eval_report, policy.metric)
    base_model = base_model or train_config.get("model")
    digest = checkpoint_digest(checkpoint)
    unfinished = unfinished_registration(name, digest, client)
    base: BaseReference | None = None
    if base_report:
        if base_has_heads is None:
            base_has_heads = has_trained_heads(base_model) if base_model else False
            if not base_model:
                logger.warning("no base model given: only its dense mode counts as the base reference")
        base = base_reference(base_report, policy.metric, base_has_heads)

    if unfinished is not None and "promotion" in unfinished.tags:
        # Decided (and tagged) before it stopped: apply that decision; the champion may already point at it.
        version, run_id = str(unfinished.version), unfinished.run_id
        logger.info("finishing the registration of %s v%s (it stopped after its decision)", name, version)
        decision = Decision(
            unfinished.tags["promotion"] == "promoted", unfinished.tags.get("promotion_reason", "")
        )
        compared = unfinished.tags.get("compared_with_champion_version")
        champion = None if compared is None else Champion(compared, None, eval_set_id)
        card = (
            Path(checkpoint, CARD_FILE).read_text(encoding="utf-8")
            if Path(checkpoint, CARD_FILE).is_file()
            else ""
        )
    else:
        champion = find_champion(name, policy.metric, eval_set_id, client)
        if champion is not None and champion.value is None:
            logger.warning(
                "champion %s v%s has no %s: treating it as absent", name, champion.version, policy.metric
            )
            champion = None
        decision = decide(
            policy,
            candidate,
            eval_set_id,
            None if champion is None else (champion.value, champion.eval_set_id),
            base,
        )
        card = model_card(
            checkpoint,
            eval_report,
            base_report,
            {"model": base_model, **train_config} if base_model else train_config,
            data_snapshot,
            decision,
            run_params,
            base_has_heads=base_has_heads,
        )
        if description:
            card = f"{description}\n\n{card}"
        if unfinished is None:
            Path(checkpoint, CARD_FILE).write_text(
                card, encoding="utf-8"
            )  # before logging: the artifact carries it
            version, run_id = _log_and_create_version(
                checkpoint, name, digest, eval_report, base_report, card, run_params, train_config, onnx
            )
        else:
            version, run_id = str(unfinished.version), unfinished.run_id
            logger.info(
                "finishing the registration of %s v%s (it stopped before its decision)", name, version
            )
        tags = {
            "data_snapshot": data_snapshot,
            "config_hash": config_hash(train_config),
            "code_version": code_version(),
            "eval_set_id": eval_set_id,
            tag_key(f"eval.{policy.metric}"): f"{candidate:.6f}",
            "source_checkpoint": str(checkpoint),
        }
        for mode, values in eval_report.get("average", {}).items():
            for metric, value in values.items():
                tags[tag_key(f"eval.average.{mode}.{metric}")] = f"{float(value):.6f}"
        tags.update(eval_tags(eval_report, eval_set_id, policy.metric))
        if base is not None:
            tags[tag_key(f"base.{policy.metric}")] = f"{base.value:.6f}"
            tags["base_reference_mode"] = base.mode
        if base_model:
            tags["base_model"] = str(base_model)
        if champion is not None:
            tags["compared_with_champion_version"] = champion.version
        tags["promotion_reason"] = decision.reason
        tags["promotion"] = "promoted" if decision.promote else "rejected"  # last: "decided" (see above)
        for k, v in tags.items():
            client.set_model_version_tag(name, version, k, v)

    client.set_registered_model_alias(name, CHALLENGER, version)
    if decision.promote:
        client.set_registered_model_alias(name, CHAMPION, version)
    if card:
        client.update_model_version(name, version, description=card_description(card))
    client.set_model_version_tag(name, version, STATE_TAG, COMPLETE)
    logger.info(
        "registered %s v%s (%s): %s",
        name,
        version,
        "champion" if decision.promote else "challenger",
        decision.reason,
    )
    return Registration(
        name, version, f"models:/{name}/{version}", run_id, decision, candidate, champion, base
    )


def _log_and_create_version(
    checkpoint: str | Path,
    name: str,
    digest: str,
    eval_report: dict[str, Any],
    base_report: dict[str, Any] | None,
    card: str,
    run_params: dict[str, Any] | None,
    train_config: dict[str, Any],
    onnx: bool,
) -> tuple[str, str]:
    """Log the checkpoint and its reports in a run, then create the version, pending; returns (version, run id)."""
    own_run = mlflow.active_run() is None
    run = mlflow.start_run() if own_run else mlflow.active_run()
    try:
        mlflow.set_tag(DIGEST_TAG, digest)
        mlflow.log_dict(eval_report, "eval_report.json")
        if base_report:
            mlflow.log_dict(base_report, "base_eval_report.json")
        mlflow.log_text(card, "model_card.md")
        if run_params:  # what produced this version, in full (the retrain's parameters)
            mlflow.log_dict(run_params, "retrain_params.json")
        if train_config:
            mlflow.log_dict(train_config, "train_config.json")
        info = log_m3_model(checkpoint, onnx=onnx)
        # The digest and the pending state are creation tags: no version exists without them.
        mv = mlflow.register_model(info.model_uri, name, tags={DIGEST_TAG: digest, STATE_TAG: PENDING})
    finally:
        if own_run:
            mlflow.end_run()
    return str(mv.version), run.info.run_id
