"""Test helpers shared by the suites: generated text, processes and ports, data trees, the distributed worker."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
