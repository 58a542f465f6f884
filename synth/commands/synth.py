"""`m3 synth`: LLM-generated queries for long warehouse documents (generate, export, report, cost)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

NAME = "synth"
HELP = "synthetic queries for long documents through any OpenAI-compatible endpoint (or a local llama.cpp)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--warehouse", default=None, help="warehouse file (default: <M3_HOME>/warehouse.duckdb)"
    )
    sub = parser.add_subparsers(dest="synth_command", metavar="ACTION", required=True)

    gen = sub.add_parser(
        "generate",
        help="generate, validate and store queries (resumable, budget-capped); exit 0 complete, "
        "3 stopped by a cap, 4 some requests failed, 5 none answered",
    )
    gen.add_argument("--config", help="YAML/JSON SynthConfig file; the flags below override it")
    gen.add_argument("--local", metavar="MODEL", nargs="?", const="default",
                     help="start a local llama.cpp server for this run (a model from `m3 llm list`)")  # fmt: skip
    gen.add_argument("--base-url", help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8088/v1")
    gen.add_argument("--model", help="model name at the endpoint")
    gen.add_argument(
        "--api-key-env", help="environment variable holding the API key (default M3_LLM_API_KEY)"
    )
    gen.add_argument("--langs", help="comma-separated document languages (default: all)")
    gen.add_argument("--per-lang", type=int, help="documents per language")
    gen.add_argument("--min-tokens", type=int, help="minimum document length (approximate tokens)")
    gen.add_argument("--source", help="only documents from this source")
    gen.add_argument("--seed", type=int, help="paragraph-choice seed")
    gen.add_argument("--concurrency", type=int, help="requests in flight")
    gen.add_argument("--threads", type=int, default=1, help="with --local: llama.cpp threads")
    gen.add_argument("--max-requests", type=int, help="cap: new requests this run")
    gen.add_argument("--max-tokens", type=int, help="cap: prompt+completion tokens this run")
    gen.add_argument("--max-cost", type=float, help="cap: USD this run")
    gen.add_argument("--price-in", type=float, help="USD per million input tokens")
    gen.add_argument("--price-out", type=float, help="USD per million output tokens")

    exp = sub.add_parser("export", help="write accepted queries as FlagEmbedding training JSONL")
    exp.add_argument("output", help="output .jsonl path")
    exp.add_argument("--positive", choices=["paragraph", "document"], default="paragraph",
                     help="positive passage: the source paragraph (default) or the whole document")  # fmt: skip
    exp.add_argument("--langs", help="comma-separated languages (default: all)")
    exp.add_argument("--splits", default="train",
                     help="only queries on documents of these splits (comma list of train, dev, test, or 'all'; "
                     "default train: held-out documents stay out of training)")  # fmt: skip

    rep = sub.add_parser("report", help="acceptance rate per language and rejection reasons")
    rep.add_argument("--model", help="only this model's generations")

    cost = sub.add_parser("cost", help="project the cost of N queries from measured token counts")
    cost.add_argument("-n", type=int, default=1000, help="number of queries (default 1000)")
    cost.add_argument("--model", help="measure this model's requests only")
    cost.add_argument("--price-in", type=float, default=0.15, help="USD per million input tokens (0.15)")
    cost.add_argument("--price-out", type=float, default=0.60, help="USD per million output tokens (0.60)")


def _csv(text: str | None) -> list[str]:
    return [x.strip() for x in (text or "").split(",") if x.strip()]


def _load_config(args: argparse.Namespace):  # -> SynthConfig (import kept inside run paths)
    import yaml

    from synth.config import SynthConfig

    data = {}
    if args.config:
        path = Path(args.config)
        if not path.is_file():
            raise FileNotFoundError(f"--config {path}: no such file")
        data = yaml.safe_load(path.read_text()) or {}
        if not isinstance(data, dict):
            raise ValueError(f"--config {path}: expected a mapping of SynthConfig fields")
    cfg = SynthConfig.model_validate(data)
    overrides = {
        ("endpoint", "base_url"): args.base_url, ("endpoint", "model"): args.model,
        ("endpoint", "api_key_env"): args.api_key_env, ("endpoint", "concurrency"): args.concurrency,
        ("selection", "per_language"): args.per_lang, ("selection", "min_tokens"): args.min_tokens,
        ("selection", "source"): args.source, ("selection", "seed"): args.seed,
        ("budget", "max_requests"): args.max_requests, ("budget", "max_tokens"): args.max_tokens,
        ("budget", "max_cost_usd"): args.max_cost, ("budget", "price_input_per_m"): args.price_in,
        ("budget", "price_output_per_m"): args.price_out,
    }  # fmt: skip
    dump = cfg.model_dump()
    for (section, key), value in overrides.items():
        if value is not None:
            dump[section][key] = value
    if args.langs:
        dump["selection"]["languages"] = _csv(args.langs)
    return SynthConfig.model_validate(dump)


def run(args: argparse.Namespace) -> int:
    from m3core.data.warehouse import Warehouse
    from synth import store

    if args.synth_command == "generate":
        return _generate(args)
    with Warehouse(args.warehouse) as wh:
        store.ensure_schema(wh)
        if args.synth_command == "export":
            splits = None if args.splits == "all" else _csv(args.splits)
            n = store.export_training_jsonl(
                wh.con, args.output, positive=args.positive, languages=_csv(args.langs), splits=splits
            )
            print(f"wrote {n} training examples to {args.output}")
        elif args.synth_command == "report":
            _print_report(wh.con, args.model)
        elif args.synth_command == "cost":
            from synth.budget import project_cost
            from synth.config import BudgetConfig

            p_in, p_out, _tps, n_req = store.mean_tokens(wh.con, args.model)
            if n_req == 0:
                raise ValueError(
                    "no successful requests in the warehouse to measure tokens from; run `m3 synth generate`"
                )
            rows = store.acceptance_by_language(wh.con, model=args.model)
            acc = sum(r[1] for r in rows) / max(1, sum(r[1] + r[2] for r in rows))
            prices = BudgetConfig(price_input_per_m=args.price_in, price_output_per_m=args.price_out)
            p = project_cost(args.n, p_in, p_out, acc, prices)
            print(f"measured over {n_req} requests: {p_in:.0f} prompt + {p_out:.0f} completion tokens per request, "
                  f"acceptance {acc:.0%}")  # fmt: skip
            print(f"at ${args.price_in}/M input, ${args.price_out}/M output: {args.n} requests ${p.cost_per_n_requests:.4f}; "
                  f"{args.n} accepted queries ${p.cost_per_n_accepted:.4f}")  # fmt: skip
    return 0


# Exit codes of `m3 synth generate`, by how the run ended (a flow or a script tells them apart).
EXIT_CODES = {"complete": 0, "stopped": 3, "partial": 4, "failed": 5}


def _generate(args: argparse.Namespace) -> int:
    from m3core.data.warehouse import Warehouse
    from synth.client import FatalEndpointError
    from synth.generate import generate_queries

    cfg = _load_config(args)
    with Warehouse(args.warehouse) as wh:
        try:
            rep = generate_queries(cfg, wh, local_model=args.local, threads=args.threads)
        except FatalEndpointError as err:  # the endpoint refuses every request: one line, no traceback
            print(f"m3 synth generate: error: {err}", file=sys.stderr)
            return EXIT_CODES["failed"]
        print(rep.message)
        for lang, acc, rej, rate in rep.by_language:
            print(f"  {lang:6s} accepted {acc:4d}  rejected {rej:4d}  acceptance {rate:.0%}")
        if rep.n_sent:
            print(f"  {rep.completion_tokens_per_s:.1f} generated tokens/s over {rep.seconds:.1f} s")
    return EXIT_CODES[rep.status]


def _print_report(con, model: str | None) -> None:
    from synth import store

    rows = store.acceptance_by_language(con, model=model)
    if not rows:
        print("no synthetic queries yet (run `m3 synth generate`)")
        return
    reasons: dict[str, list[str]] = {}
    for lang, reason, n in store.rejection_reasons(con, model):
        reasons.setdefault(lang, []).append(f"{reason} {n}")
    print(f"{'lang':6s} {'accepted':>8s} {'rejected':>8s} {'rate':>6s}  rejection reasons")
    for lang, acc, rej, rate in rows:
        print(f"{lang:6s} {acc:8d} {rej:8d} {rate:6.0%}  {', '.join(reasons.get(lang, []))}")
