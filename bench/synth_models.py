"""Benchmark: the local GGUF models as query generators on real man pages — acceptance rate per language,
tokens/s on this machine, and the cost of 1,000 queries at a configured price.

Each model runs the same documents and paragraphs (same seed). The baseline is SmolLM2-135M (the smaller
model), measured in the same run; ratios are gemma3-270m / baseline. The man pages come from the warehouse
(`--warehouse`, documents of source 'manpages') or, where it has none, are rendered with groff from
/usr/share/man into a fresh bench warehouse.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/synth_models.py --per-lang 6 --threads 2
"""

from __future__ import annotations

import argparse
import gzip
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from m3core.data.warehouse import Warehouse
from synth import generate, server, store
from synth.budget import project_cost
from synth.config import BudgetConfig, GenerationParams, SelectionConfig, SynthConfig

# man-page directory per language (Debian's layout); "en" is the untranslated top level.
MAN_DIRS = {"en": "", "de": "de", "fr": "fr", "es": "es", "it": "it", "pt": "pt_BR", "pl": "pl", "ru": "ru",
            "uk": "uk", "ja": "ja", "zh": "zh_CN", "nl": "nl"}  # fmt: skip


def render(path: Path) -> str:
    data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    proc = subprocess.run(["groff", "-k", "-man", "-Tutf8", "-P-cbou", "-rLL=100n"], input=data, capture_output=True,
                          timeout=60, check=False)  # fmt: skip
    return proc.stdout.decode("utf-8", "replace")


def fill_warehouse(wh: Warehouse, langs: list[str], per_lang: int, min_chars: int) -> None:
    """Render up to 4x `per_lang` section-1 pages per language (the run then picks `per_lang` long ones)."""
    for lang in langs:
        base = Path("/usr/share/man") / MAN_DIRS.get(lang, lang) / "man1"
        files = sorted(p for p in base.glob("*.1*") if p.is_file() and not p.is_symlink())
        n = 0
        for f in files[:: max(1, len(files) // (per_lang * 8))]:
            text = render(f)
            if len(text) < min_chars:
                continue
            wh.con.execute(
                "INSERT OR IGNORE INTO documents (doc_id, source, location, lang, lang_conf, title, text, n_chars) "
                "VALUES (?, 'manpages', ?, ?, 1.0, ?, ?, ?)",
                [f"{lang}:{f.name}", str(f), lang, f.name.split(".")[0], text, len(text)],
            )
            n += 1
            if n >= per_lang * 4:
                break
        print(f"  {lang}: {n} pages rendered from {base}")


def decode_speed(srv: server.LocalLLMServer, n_tokens: int = 96) -> tuple[float, float]:
    """(generated tokens/s, seconds) for one short-prompt request: prompt processing is negligible here."""
    from synth.client import ChatClient

    params = GenerationParams(max_tokens=n_tokens, temperature=0.0, seed=0)
    msgs = [{"role": "user", "content": "Write a long story about a cat."}]
    with ChatClient(srv.endpoint(structured_output="none", timeout_s=300)) as client:
        client.complete(
            [{"role": "user", "content": "Hi"}], params.model_copy(update={"max_tokens": 4})
        )  # warm-up
        r = client.complete(msgs, params)
    return (r.completion_tokens / r.latency_s if r.latency_s else 0.0), r.latency_s


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--langs", default="en,de,fr,es,it,pt,pl,ru,ja,zh")
    ap.add_argument("--per-lang", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2, help="llama.cpp threads (1 or 2 on this machine)")
    ap.add_argument("--models", default="smollm2-135m,gemma3-270m", help="first one is the baseline")
    ap.add_argument("--warehouse", help="use documents from this warehouse (default: render man pages)")
    ap.add_argument("--speed-only", action="store_true", help="only measure decode tokens/s per model")
    ap.add_argument("--no-example", action="store_true", help="prompt without the worked example")
    ap.add_argument("--price-in", type=float, default=0.15)
    ap.add_argument("--price-out", type=float, default=0.60)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    langs = [x.strip() for x in args.langs.split(",") if x.strip()]
    out_dir = Path(__file__).resolve().parent / "out"
    out_dir.mkdir(exist_ok=True)
    wh_path = Path(args.warehouse) if args.warehouse else out_dir / f"synth-bench-{int(time.time())}.duckdb"
    prices = BudgetConfig(price_input_per_m=args.price_in, price_output_per_m=args.price_out)
    results = {}
    if args.speed_only:
        for name in [m.strip() for m in args.models.split(",")]:
            with server.LocalLLMServer(name, n_threads=args.threads) as srv:
                tps, secs = decode_speed(srv)
            print(
                f"{name}: {tps:.1f} generated tokens/s ({args.threads} threads, {secs:.1f} s, load {os.getloadavg()[0]:.1f})"
            )
        return 0
    with Warehouse(wh_path) as wh:
        have = wh.con.execute("SELECT count(*) FROM documents WHERE source = 'manpages'").fetchone()[0]
        if not have:
            print(f"rendering man pages into {wh_path}")
            fill_warehouse(wh, langs, args.per_lang, min_chars=3000)
        store.ensure_schema(wh)
        for name in [m.strip() for m in args.models.split(",")]:
            # Decide every reply again under the current validator; cached replies are reused, not re-sent.
            store.forget_decisions(wh.con, name)
            with server.LocalLLMServer(name, n_threads=args.threads) as srv:
                cfg = SynthConfig(
                    endpoint=srv.endpoint(concurrency=1, timeout_s=300),
                    params=GenerationParams(
                        max_tokens=64, temperature=0.3, prompt_example=not args.no_example
                    ),
                    selection=SelectionConfig(
                        languages=langs, per_language=args.per_lang, min_tokens=300, source="manpages"
                    ),
                    budget=prices,
                )
                rep = generate.run(cfg, wh, progress=False)
            p_in, p_out, tps, _n = store.mean_tokens(wh.con, name, run_id=rep.run_id)
            rows = store.acceptance_by_language(wh.con, model=name, run_id=rep.run_id)
            acc = sum(r[1] for r in rows) / max(1, sum(r[1] + r[2] for r in rows))
            cost = project_cost(1000, p_in, p_out, acc, prices)
            results[name] = (rep, rows, acc, cost, tps)
            print(f"\n== {name} ({args.threads} threads, example={not args.no_example}): {rep.message}")
            print(f"   {'lang':5s} {'acc':>4s} {'rej':>4s} {'rate':>5s}  reasons")
            reasons: dict[str, list[str]] = {}
            for lang, reason, n in store.rejection_reasons(wh.con, name, run_id=rep.run_id):
                reasons.setdefault(lang, []).append(f"{reason} {n}")
            for lang, a, r, rate in rows:
                print(f"   {lang:5s} {a:4d} {r:4d} {rate:5.0%}  {', '.join(reasons.get(lang, []))}")
            print(f"   overall acceptance {acc:.0%}; {tps:.1f} generated tokens/s per request (prompt processing "
                  f"included); {p_in:.0f} prompt + {p_out:.0f} completion tokens/request")  # fmt: skip
            print(f"   1,000 queries at ${args.price_in}/M in, ${args.price_out}/M out: ${cost.cost_per_n_requests:.4f} "
                  f"(requests), ${cost.cost_per_n_accepted:.4f} (accepted)")  # fmt: skip
        names = list(results)
        if len(names) >= 2:
            base, other = results[names[0]], results[names[1]]
            print(f"\nratio {names[1]} / {names[0]} (baseline, same run): acceptance {other[2] / max(base[2], 1e-9):.2f}x, "
                  f"generated tokens/s {other[4] / max(base[4], 1e-9):.2f}x")  # fmt: skip
            samples = wh.con.execute(
                "SELECT model, lang, query FROM synth_queries WHERE run_id IN (SELECT unnest(?::VARCHAR[])) "
                "ORDER BY model, lang, query_id",
                [[r[0].run_id for r in results.values()]],
            ).fetchall()
            print("\nsample accepted queries:")
            seen: set[tuple[str, str]] = set()
            for model, lang, q in samples:
                if (model, lang) not in seen:
                    seen.add((model, lang))
                    print(f"  [{model} {lang}] {q}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
