"""docker/ and the environment table: the compose file validates (no Docker engine needed) and names the services
the platform needs; the deployment files name pools, entrypoints and flows that exist; the one table of environment
defaults (flows/environment.env) is what the Makefile exports, the tests and the image's entry point apply — the
platform part only for the flows and the image — and a value already set always wins."""

from __future__ import annotations

import ast
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.support import REPO_ROOT

ROOT = REPO_ROOT


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
    assert "prefect.yaml" in text.split("AS cpu", 1)[1].split("CMD", 1)[0]  # `prefect deploy --all` in /app
    assert 'ENTRYPOINT ["sh", "/usr/local/bin/m3-entrypoint"]' in text


def test_compose_worker_deploys_the_root_prefect_yaml():
    worker = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())["services"]["worker"]
    assert "prefect --no-prompt deploy --all &&" in worker["command"]
    assert "--prefect-file" not in worker["command"]


def deployments(path: Path) -> list[dict]:
    return yaml.safe_load(path.read_text())["deployments"]


def flows_in(path: Path) -> set[str]:
    """Names of the functions decorated with `@flow` / `@flow(...)` in a source file (read, not imported)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef):
            for dec in node.decorator_list:
                if getattr(dec.func if isinstance(dec, ast.Call) else dec, "id", None) == "flow":
                    names.add(node.name)
    return names


def test_deployment_files_name_existing_flows_and_one_pool_each():
    """The root file: the process pool only (`deploy --all` needs no other); docker/prefect.yaml: the docker one."""
    pools = {}
    for path in (ROOT / "prefect.yaml", ROOT / "docker" / "prefect.yaml"):
        for d in deployments(path):
            file, func = d["entrypoint"].split(":")
            assert func in flows_in(ROOT / file), d["entrypoint"]
            pools.setdefault(path.relative_to(ROOT).as_posix(), set()).add(d["work_pool"]["name"])
    assert pools == {"prefect.yaml": {"m3-process"}, "docker/prefect.yaml": {"m3-docker"}}
    (docker,) = deployments(ROOT / "docker" / "prefect.yaml")
    assert (
        docker["name"] == "weekly-docker"
        and docker["work_pool"]["job_variables"]["image"] == "m3-platform:cpu"
    )
    assert docker["pull"] == [{"prefect.deployments.steps.set_working_directory": {"directory": "/app"}}]


# ---------------------------------------------------------------- the one table of environment defaults
def table(*scopes: str) -> dict[str, str]:
    """`flows.settings.env_defaults(*scopes)`, the module read by its path: importing the `flows` package would
    run configure_environment in this process (as tests/conftest.py does)."""
    spec = importlib.util.spec_from_file_location("_m3_settings", ROOT / "flows" / "settings.py")
    settings = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(settings)
    return settings.env_defaults(*scopes)


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without the table's variables (as on a fresh machine), plus `extra`."""
    every = table("platform", "hermetic")
    return {**{k: v for k, v in os.environ.items() if k not in every}, **extra}


def exported(argv: list[str], env: dict[str, str], **kw) -> dict[str, str]:
    done = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=120, **kw)
    assert done.returncode == 0, done.stderr
    pairs = (line.split("=", 1) for line in done.stdout.splitlines() if "=" in line)
    every = table("platform", "hermetic")
    return {k: v for k, v in pairs if k in every}


def test_the_table_has_both_scopes_and_the_tests_apply_it():
    platform, hermetic = table("platform"), table("hermetic")
    assert {"HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"} == set(hermetic)
    assert {"MLFLOW_DISABLE_TELEMETRY", "PREFECT_SERVER_ANALYTICS_ENABLED", "OMP_WAIT_POLICY"} <= set(
        platform
    )
    assert not set(platform) & set(hermetic)
    assert all(key in os.environ for key in {**platform, **hermetic})  # tests/conftest.py
    with pytest.raises(ValueError, match="unknown scope"):
        table("production")


def test_make_exports_the_table_and_a_set_value_wins():
    if shutil.which("make") is None:
        pytest.skip("no make")
    probe = "probe:\n\t@env\n"
    env = clean_env(OMP_WAIT_POLICY="ACTIVE", HF_HUB_OFFLINE="0")
    got = exported(["make", "-s", "-f", "Makefile", "-f", "-", "probe"], env, input=probe)
    assert got == {**table("platform", "hermetic"), "OMP_WAIT_POLICY": "ACTIVE", "HF_HUB_OFFLINE": "0"}


def test_flows_apply_the_platform_defaults_only(tmp_path):
    script = "import os, flows.settings as s; s.configure_environment(); print(*(f'{k}={v}' for k, v in os.environ.items()), sep='\\n')"
    env = clean_env(M3_HOME=str(tmp_path), TOKENIZERS_PARALLELISM="true")
    got = exported([sys.executable, "-c", script], env)
    assert got == {**table("platform"), "TOKENIZERS_PARALLELISM": "true"}  # never the Hub offline


def test_the_image_entry_point_applies_the_platform_defaults_only():
    env = clean_env(M3_ENV_TABLE=str(ROOT / "flows" / "environment.env"), MLFLOW_DISABLE_TELEMETRY="false")
    got = exported(["sh", "docker/entrypoint.sh", "env"], env)
    assert got == {**table("platform"), "MLFLOW_DISABLE_TELEMETRY": "false"}
    assert not any(
        key in (ROOT / "docker" / "Dockerfile").read_text() for key in table("platform", "hermetic")
    )
