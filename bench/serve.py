"""Serving throughput: the M3 pyfunc behind `mlflow models serve`, torch against ONNX, texts/s over HTTP.

    .venv/bin/python bench/serve.py [--quick] [--threads 2] [--backends torch,onnx,onnx-int8] [--requests 30]

Model: the e5 model of `encode.py` (multilingual-e5-small with M3 heads, in the bench cache), logged by
`registry.log_model.log_m3_model(checkpoint, onnx=True)` into a temporary MLflow store (SQLite tracking, an
experiment with a local artifact location), so the logged version carries the checkpoint and its ONNX export.
One `mlflow models serve -m <model uri> --env-manager local -h 127.0.0.1 -w 1` per backend, each with
`M3_PYFUNC_BACKEND` set (`torch`, `onnx` = fp32, `onnx-int8`; read by the pyfunc at load time) and its threads
limited to `--threads` (`OMP_NUM_THREADS`/`MKL_NUM_THREADS`: torch's intra-op threads, and the ONNX backend's
onnxruntime threads, which default to torch's). All servers are started and answer `/ping` before any timing.

The loop is bounded: the same `--warmup` + `--requests` requests for every backend, each a POST /invocations of
`--batch` texts (`{"inputs": [...], "params": {"input_type": "passage"}}`, dense vectors back) from a mixed corpus
(half short queries, half passages of ~100-500 tokens, as `encode.py --cases mixed`), every text distinct. The
servers take turns request by request (one request in flight at a time, never two servers at once), so load from
other processes hits them alike. texts/s is texts over the summed wall time of the timed requests (client JSON
encoding, HTTP, server parsing, encoding and the JSON answer included). The max abs difference of the dense
vectors from torch's, on the same requests, shows that each server really ran its own backend.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import pin_threads, print_table
from conformance_flagembedding import OFFLINE_ENV, ROOT
from encode import BENCH_DIR, mixed_texts, prepare_model

BACKENDS = ("torch", "onnx", "onnx-int8")  # values of M3_PYFUNC_BACKEND
START_TIMEOUT_S = 300  # a scoring server loads in ~20-60 s on 2 busy cores
REQUEST_TIMEOUT_S = 300


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log_model(model_dir: Path, root: Path) -> tuple[str, str]:
    """Log `model_dir` with its ONNX export into a new SQLite MLflow store under `root`; (tracking uri, model uri)."""
    import mlflow

    from registry.log_model import log_m3_model

    if "onnx" not in inspect.signature(log_m3_model).parameters:
        raise SystemExit("registry.log_model.log_m3_model has no `onnx` parameter yet: nothing to compare")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    try:
        experiment = mlflow.create_experiment("bench-serve", artifact_location=(root / "artifacts").as_uri())
        with mlflow.start_run(experiment_id=experiment):
            info = log_m3_model(model_dir, onnx=True)
    finally:
        mlflow.set_tracking_uri(None)
    return uri, info.model_uri


class Server:
    """One `mlflow models serve` of the model with `M3_PYFUNC_BACKEND=backend`, in its own process group."""

    def __init__(self, backend: str, model_uri: str, tracking_uri: str, threads: int, root: Path):
        self.backend, self.port = backend, free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        bin_dir = str(Path(sys.executable).parent)  # `mlflow models serve` execs `uvicorn` from PATH
        env = {
            **os.environ,
            **OFFLINE_ENV,
            "MLFLOW_TRACKING_URI": tracking_uri,
            "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""),
            "M3_PYFUNC_BACKEND": backend,
            "OMP_NUM_THREADS": str(threads),
            "MKL_NUM_THREADS": str(threads),
        }
        argv = [os.path.join(bin_dir, "mlflow"), "models", "serve", "-m", model_uri, "--env-manager", "local",
                "-h", "127.0.0.1", "-p", str(self.port), "-w", "1", "-t", str(REQUEST_TIMEOUT_S)]  # fmt: skip
        self.log_path = root / f"server-{backend}.log"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            argv, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True, cwd=root
        )

    def wait_ready(self, deadline: float) -> None:
        while True:
            try:
                urllib.request.urlopen(f"{self.base}/ping", timeout=2).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise SystemExit(
                        f"the {self.backend} server did not start; its log ({self.log_path}):\n"
                        + self.log_path.read_text()[-4000:]
                    ) from None
                time.sleep(0.5)

    def post(self, texts: list[str]) -> tuple[float, np.ndarray]:
        """Seconds of one POST /invocations of `texts` (passages, dense only) and the dense vectors it returned."""
        body = json.dumps({"inputs": texts, "params": {"input_type": "passage"}}).encode()
        request = urllib.request.Request(
            f"{self.base}/invocations", data=body, headers={"Content-Type": "application/json"}
        )
        start = time.perf_counter()
        try:
            with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:
                answer = json.loads(response.read())
        except urllib.error.HTTPError as err:
            raise SystemExit(f"{self.backend}: HTTP {err.code}: {err.read()[:2000]!r}") from None
        seconds = time.perf_counter() - start
        dense = np.array([row["dense_vecs"] for row in answer["predictions"]], dtype=np.float32)
        if dense.shape[0] != len(texts):
            raise SystemExit(f"{self.backend}: {dense.shape[0]} rows for {len(texts)} texts")
        return seconds, dense

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        self._log.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests (2 warm-up + 6 timed)")
    parser.add_argument("--threads", type=int, default=2, help="each server's torch / onnxruntime threads")
    parser.add_argument("--backends", default=",".join(BACKENDS), help=f"comma list of {', '.join(BACKENDS)}")
    parser.add_argument("--batch", type=int, default=32, help="texts per request")
    parser.add_argument("--warmup", type=int, default=None, help="untimed requests first (default 3)")
    parser.add_argument("--requests", type=int, default=None, help="timed requests per backend (default 30)")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the MLflow store and logs here")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if not backends or set(backends) - set(BACKENDS):
        parser.error(f"--backends: expected a comma list of {', '.join(BACKENDS)}, got {args.backends!r}")
    warmup = args.warmup if args.warmup is not None else (2 if args.quick else 3)
    n_requests = args.requests or (6 if args.quick else 30)
    os.environ.update(OFFLINE_ENV)
    sys.path.insert(0, str(ROOT))  # `registry`, as when the bench runs from the repository root
    threads = pin_threads(args.threads)

    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    model_dir = prepare_model(BENCH_DIR)
    texts = mixed_texts((warmup + n_requests) * args.batch, seed=23)
    requests = [texts[i : i + args.batch] for i in range(0, len(texts), args.batch)]

    with tempfile.TemporaryDirectory(prefix="m3-bench-serve-") as tmp:
        root = args.workdir or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        tracking_uri, model_uri = log_model(model_dir, root)
        log_seconds = time.perf_counter() - t0
        servers = []
        try:
            for backend in backends:
                servers.append(Server(backend, model_uri, tracking_uri, threads, root))
            t0 = time.perf_counter()
            deadline = time.monotonic() + START_TIMEOUT_S
            for server in servers:
                server.wait_ready(deadline)
            start_seconds = time.perf_counter() - t0
            load_start = os.getloadavg()

            # Request by request, every server in turn: the same texts, one request in flight at a time.
            times: dict[str, list[float]] = {s.backend: [] for s in servers}
            diffs: dict[str, float] = {s.backend: 0.0 for s in servers}
            for i, batch in enumerate(requests):
                dense = {}
                for server in servers:
                    seconds, dense[server.backend] = server.post(batch)
                    if i >= warmup:
                        times[server.backend].append(seconds)
                if "torch" in dense:
                    for backend, vecs in dense.items():
                        diffs[backend] = max(diffs[backend], float(np.abs(vecs - dense["torch"]).max()))
            load_end = os.getloadavg()
        finally:
            for server in servers:
                server.stop()

    rows, figures = [], []
    n_texts = n_requests * args.batch
    torch_rate = n_texts / sum(times["torch"]) if "torch" in times else None
    for backend, seconds in times.items():
        rate = n_texts / sum(seconds)
        ratio = rate / torch_rate if torch_rate and backend != "torch" else None
        rows.append(
            [
                backend,
                str(len(seconds)),
                str(n_texts),
                f"{sum(seconds):.1f}",
                f"{rate:.1f}",
                f"{1000 * statistics.median(seconds):.0f}",
                f"{1000 * max(seconds):.0f}",
                f"{ratio:.2f}x" if ratio else "",
                f"{diffs[backend]:.1e}" if "torch" in times and backend != "torch" else "",
            ]
        )
        figures.append(
            {
                "backend": backend,
                "requests": len(seconds),
                "texts": n_texts,
                "seconds": sum(seconds),
                "vs_torch": ratio,
            }
        )
    tokens = None
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    timed = [t for batch in requests[warmup:] for t in batch]
    lengths = [len(x) for x in tokenizer(timed, truncation=True, max_length=512)["input_ids"]]
    tokens = sum(lengths)
    fmt = "/".join
    print(
        f"\nmlflow models serve throughput: {model_dir.name} logged with its ONNX export ({model_uri}); "
        f"{len(servers)} servers (uvicorn, 1 worker, {threads} threads each), taking turns request by request; "
        f"{n_requests} timed requests of {args.batch} passages each after {warmup} warm-up "
        f"({n_texts} texts, {min(lengths)}-{max(lengths)} tok, {tokens / len(lengths):.0f} avg), dense only; "
        f"logging took {log_seconds:.0f} s, start-up to /ping {start_seconds:.0f} s; load average (1 / 5 / 15 min) "
        f"{fmt(f'{x:.1f}' for x in load_start)} before the loop, {fmt(f'{x:.1f}' for x in load_end)} after"
    )
    print_table(
        [
            "backend",
            "requests",
            "texts",
            "s",
            "texts/s",
            "p50 ms",
            "max ms",
            "vs torch",
            "dense max |diff| vs torch",
        ],
        rows,
    )
    if args.json:
        args.json.write_text(
            json.dumps(
                {"threads": threads, "batch": args.batch, "tokens": tokens, "figures": figures}, indent=2
            )
        )
    return 0


if __name__ == "__main__":
    t0 = time.perf_counter()
    code = main()
    print(f"\n(bench took {time.perf_counter() - t0:.0f} s)")
    sys.exit(code)
