"""`m3 llm`: run the local OpenAI-compatible LLM server (llama.cpp) that synthetic-query generation uses offline."""

from __future__ import annotations

import argparse
import signal
import threading

NAME = "llm"
HELP = "local OpenAI-compatible LLM server (llama.cpp): `serve` until Ctrl-C, `list` the shipped models"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="llm_command", metavar="ACTION", required=True)
    serve = sub.add_parser("serve", help="serve a GGUF model on 127.0.0.1 until Ctrl-C / SIGTERM")
    serve.add_argument("--model", default=None, help="a known model name (see `m3 llm list`) or a .gguf path")
    serve.add_argument("--port", type=int, default=None, help="TCP port (default 8088)")
    serve.add_argument("--threads", type=int, default=1, help="CPU threads for llama.cpp (default 1)")
    serve.add_argument("--ctx", type=int, default=2048, help="context length in tokens")
    sub.add_parser("list", help="list the local models and where their files are")


def run(args: argparse.Namespace) -> int:
    from synth import server
    from synth.config import DEFAULT_LOCAL_PORT

    if args.llm_command == "list":
        server.print_models()
        return 0
    srv = server.LocalLLMServer(
        args.model or server.DEFAULT_MODEL,
        port=args.port or DEFAULT_LOCAL_PORT,
        n_threads=args.threads,
        n_ctx=args.ctx,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())  # stop the child cleanly on SIGTERM too
    died = False
    with srv:
        print(f"serving {srv.alias} at {srv.base_url} (OpenAI-compatible; Ctrl-C to stop)", flush=True)
        try:
            while not stop.wait(0.5):
                if not srv.running:
                    died = True
                    break
        except KeyboardInterrupt:
            pass
    if died:
        print(f"m3 llm serve: the server exited unexpectedly; see {srv.log_path}")
    return 1 if died else 0
