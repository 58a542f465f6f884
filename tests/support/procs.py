"""Helpers for tests that start processes: a free loopback port, a 2-process torchrun command line, a platform
home under a real temporary Prefect API."""

from __future__ import annotations

import contextlib
import socket
import sys
from collections.abc import Iterator
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args: str, nproc: int = 2) -> list[str]:
    """`python -m torch.distributed.run` on 127.0.0.1 with `nproc` processes, then `args`."""
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_addr",
            "127.0.0.1", "--master_port", str(free_port()), *args]  # fmt: skip


@contextlib.contextmanager
def platform_home(home: Path) -> Iterator[Path]:
    """`home` as the platform home (M3_HOME, its MLflow SQLite store, its Prefect home and result storage); the
    environment is restored afterwards. The Prefect API is the session's (`prefect_server` in tests/conftest.py):
    a fixture using this asks for that one too."""
    import pytest
    from prefect.settings import PREFECT_LOCAL_STORAGE_PATH, temporary_settings

    mp = pytest.MonkeyPatch()
    mp.setenv("M3_HOME", str(home))
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}")
    mp.setenv("PREFECT_HOME", str(home / "prefect"))
    mp.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)  # the flows set it; undo() removes it again
    try:
        with temporary_settings({PREFECT_LOCAL_STORAGE_PATH: home / "prefect" / "storage"}):
            yield home
    finally:
        mp.undo()


@contextlib.contextmanager
def prefect_api(home: Path) -> Iterator[None]:
    """A temporary Prefect API server (`prefect_test_harness`, its own database) with its home under `home`."""
    import pytest
    from prefect.testing.utilities import prefect_test_harness

    mp = pytest.MonkeyPatch()
    mp.setenv("PREFECT_HOME", str(home))
    try:
        with prefect_test_harness(server_startup_timeout=120):
            yield
    finally:
        mp.undo()
