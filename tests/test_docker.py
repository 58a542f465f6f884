"""docker/: the compose file validates (no Docker engine needed) and names the services the platform needs."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def compose_command() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if (
        shutil.which("docker")
        and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0
    ):
        return ["docker", "compose"]
    return None


def test_compose_config_validates():
    cmd = compose_command()
    if cmd is None:
        pytest.skip(
            "neither docker-compose nor the docker compose plugin is installed (make setup installs it)"
        )
    done = subprocess.run(
        [*cmd, "-f", str(ROOT / "docker" / "compose.yaml"), "config"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    config = yaml.safe_load(done.stdout)
    assert {"postgres", "prefect-server", "worker", "mlflow"} <= set(config["services"])
    assert "postgresql" in config["services"]["mlflow"]["command"]


def test_dockerfile_has_cpu_and_cuda_targets_and_installs_torch_first():
    text = (ROOT / "docker" / "Dockerfile").read_text()
    assert " AS cpu" in text and " AS cuda" in text
    assert text.index("torch==2.13.0") < text.index("pip install -e .")
