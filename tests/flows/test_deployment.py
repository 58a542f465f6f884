"""The operator's path, for real: the README's deployment commands, read from its marked block and run in order
(`prefect server start` on 127.0.0.1, the work pool, `prefect --no-prompt deploy --all`, a process worker), the
`prefect` lines of its docker block (the docker pool and `deploy --all --prefect-file docker/prefect.yaml`; not the
docker worker: no Docker engine here); every deployment the README (or docker/compose.yaml) runs must then exist,
and `prefect deployment run 'retrain/adhoc' --watch` with small parameters must register a new model version.

The server listens on a free port: PREFECT_SERVER_API_PORT for `prefect server start` and PREFECT_API_URL (which
wins over the profile value `prefect config set` writes) for the rest; the README's URL is checked against the
server's default port instead."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import mlflow
import pytest

from tests.support import REPO_ROOT
from tests.support.procs import free_port
from tests.support.retrain import small_params

ROOT = REPO_ROOT
BIN = Path(sys.executable).parent
README = ROOT / "README.md"

SHELL_SYNTAX = re.compile(r"[|;<>`$]|&&")


def readme_block(marker: str) -> list[str]:
    """The command lines of the ```bash block right after `<!-- marker ... -->` in the README."""
    found = re.search(
        rf"^[ \t]*<!-- {re.escape(marker)}\b.*?-->[ \t]*\n[ \t]*```bash\n(.*?)\n[ \t]*```",
        README.read_text(),
        re.S | re.M,
    )
    assert found, f"README.md: no ```bash block after <!-- {marker} -->"
    return [
        line.strip() for line in found[1].splitlines() if line.strip() and not line.strip().startswith("#")
    ]


def command(line: str) -> tuple[list[str], bool]:
    """(argv, runs in the background) of a README line: a simple command, optionally ending in `&`, then a comment."""
    argv = shlex.split(line, comments=True)
    background = argv[-1] == "&"
    argv = argv[:-1] if background else argv
    assert argv and not SHELL_SYNTAX.search(shlex.join(argv)) and "&" not in argv, (
        f"not a simple command: {line}"
    )
    return argv, background


def deployments_run_in(text: str) -> set[str]:
    return set(re.findall(r"prefect deployment run '([^']+)'", text))


def stop(proc: subprocess.Popen) -> None:
    for _ in range(2):  # a Prefect worker wants two SIGTERMs
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                continue
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_readme_blocks_are_simple_commands():
    """(Fast.) The README's blocks parse; the URL the CLI is told is the server's default address."""
    from prefect.settings.models.server.api import ServerAPISettings

    lines = readme_block("deployment-commands")
    argvs = [command(line)[0] for line in lines]
    assert ["prefect", "--no-prompt", "deploy", "--all"] in argvs  # the root prefect.yaml, every deployment
    (server,) = [a for a in argvs if a[:3] == ["prefect", "server", "start"]]
    (url,) = [a[3].split("=", 1)[1] for a in argvs if a[:3] == ["prefect", "config", "set"]]
    host = server[server.index("--host") + 1]
    assert host == "127.0.0.1"
    assert url == f"http://{host}:{ServerAPISettings.model_fields['port'].default}/api"
    assert "retrain/adhoc" in deployments_run_in("\n".join(lines))
    for line in readme_block("docker-deployment-commands"):
        command(line)
    assert not (ROOT / "flows" / "prefect.yaml").exists()
    assert (ROOT / "prefect.yaml").exists() and (ROOT / "docker" / "prefect.yaml").exists()


@pytest.mark.slow
def test_readme_deployment_commands_register_a_model(tmp_path):
    port = free_port()
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",  # .venv/bin on PATH, as the README asks
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "PREFECT_SERVER_API_PORT": str(port),
        "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
        "M3_HOME": str(tmp_path / "m3"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
    }
    api = env["PREFECT_API_URL"]
    background: list[subprocess.Popen] = []

    def run(argv: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
        done = subprocess.run(argv, env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        logs = "".join(f"\n--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(tmp_path.glob("*.log")))
        assert done.returncode == 0, f"{shlex.join(argv)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}{logs}"
        return done

    def start(argv: list[str]) -> None:
        log = open(tmp_path / f"{len(background)}-{argv[1]}.log", "w")  # noqa: SIM115
        background.append(subprocess.Popen(argv, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT))

    params = {"params": json.loads(small_params("deployed").model_dump_json())}
    lines = readme_block("deployment-commands")
    runs = [line for line in lines if command(line)[0][:3] == ["prefect", "deployment", "run"]]
    try:
        for line in lines:  # the set-up, exactly as written, in order
            argv, in_background = command(line)
            if line not in runs:
                start(argv) if in_background else run(argv)

        docker_lines = readme_block("docker-deployment-commands")
        for line in docker_lines:  # the docker pool and its deployment; not the image, nor its worker
            argv, in_background = command(line)
            if argv[0] == "prefect" and argv[1:3] not in (["worker", "start"], ["deployment", "run"]):
                assert not in_background, line
                run(argv)
            else:
                assert argv[0] in ("docker", "pip", "prefect"), f"untested line: {line}"

        # every deployment the README or the compose file later runs exists
        wanted = deployments_run_in(README.read_text()) | deployments_run_in(
            (ROOT / "docker" / "compose.yaml").read_text()
        )
        assert {"retrain/adhoc", "retrain/weekly", "retrain/weekly-docker"} <= wanted
        for name in sorted(wanted):
            flow_name, deployment = name.split("/")
            found = httpx.get(f"{api}/deployments/name/{flow_name}/{deployment}", timeout=10)
            assert found.status_code == 200, f"deployment {name} is missing: {found.text}"

        (line,) = runs
        argv, _ = command(line)
        assert argv[3] == "retrain/adhoc" and "--watch" in argv, line
        done = run([*argv, "--params", json.dumps(params)], timeout=1800)  # the README's line, small params
        assert "Completed" in done.stdout, done.stdout[-3000:]
        client = mlflow.MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
        versions = client.search_model_versions("name='m3'")  # (search results carry no aliases)
        assert len(versions) == 1
        assert str(client.get_model_version_by_alias("m3", "challenger").version) == str(versions[0].version)
    finally:
        for proc in reversed(background):  # the worker, then the server
            stop(proc)
