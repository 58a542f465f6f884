"""The small retrain parameters the flow tests and the deployment test run (a scratch model, three languages)."""

from __future__ import annotations


def small_params(run_name: str):
    from flows.params import RetrainParams

    return RetrainParams.model_validate(
        {
            "run_name": run_name,
            "mine": {"gettext": False, "manpage_languages": ["en", "de", "fr"], "max_per_language": 200},
            "synth": {"enabled": False},
            "negatives": {"rank_range": [2, 30], "num_negatives": 2, "interim_alias": None},
            "train": {
                "backbone": "scratch",
                "scratch": {"hidden_size": 64, "vocab_size": 2000},
                "overrides": {"max_steps": 12, "self_distill_start_step": 4, "group_size": 3},
            },
            "eval": {"max_queries": 20, "modes": ["dense", "sparse", "all"]},
            "train_languages": ["de", "fr", "en"],
            "max_train_per_language": 60,
        }
    )
