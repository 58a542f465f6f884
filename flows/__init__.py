"""Prefect flows of the M3 platform: thin wrappers over m3core, synth and registry.

Importing this package sets the embedded default's environment (Prefect home and patient ephemeral server,
MLflow SQLite store under `M3_HOME`) before Prefect reads its settings; variables already set win.
"""

from flows.settings import configure_environment

configure_environment()
