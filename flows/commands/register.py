"""`m3 register RUN_DIR`: register a retrain's trained model from its run directory, as the retrain does.

For when the retrain's registration failed (the MLflow tracking server was away longer than the retries): the
run directory keeps the model and what registration needs, and the retrain's error names this command. A
registration that stopped halfway is finished (no second version). Exit 3 when registration fails again.
"""

from __future__ import annotations

import argparse
import sys

HELP = "register a retrain run's model in MLflow (after a registration that failed)"
REGISTRATION_FAILED = 3


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="the retrain's run directory ($M3_HOME/runs/<name>)")


def run(args: argparse.Namespace) -> int:
    from flows.register_and_promote import RegistrationFailed
    from flows.retrain import register_run
    from flows.settings import configure_environment

    configure_environment()
    try:
        reg = register_run(args.run_dir)
    except RegistrationFailed as err:
        print(f"m3 register: error: {err}", file=sys.stderr)
        return REGISTRATION_FAILED
    role = "champion" if reg["promoted"] else "challenger"
    print(f"registered models:/{reg['name']}/{reg['version']} ({role}: {reg['reason']})")
    return 0
