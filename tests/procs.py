"""Helpers for tests that start processes: a free loopback port, a 2-process torchrun command line."""

from __future__ import annotations

import socket
import sys


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(*args: str, nproc: int = 2) -> list[str]:
    """`python -m torch.distributed.run` on 127.0.0.1 with `nproc` processes, then `args`."""
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_addr",
            "127.0.0.1", "--master_port", str(free_port()), *args]  # fmt: skip
