"""Hard-negative mining with an interim model.

For each training query, the model ranks a passage pool (the corpus plus every positive) and negatives
are sampled from a rank window (default ranks 2–200, 1-based, inclusive): rank 1 is skipped because it is
usually the positive or an unlabelled true answer, and very deep ranks are too easy to teach anything.
A negative is never one of the query's positives nor a duplicate of the query (compared after collapsing
whitespace and case), and never repeated. When the window holds too few eligible passages, random pool
passages outside the skipped top ranks fill the list (reported, and marked with rank None).

Optionally each example carries teacher scores: the model's hybrid score (w_dense·dense + w_sparse·lex +
w_colbert·colbert) of the query against each positive and negative, as the M3 self-distillation expects.

Inputs: FlagEmbedding JSONL / a corpus file, or the warehouse `pairs` table. Outputs: FlagEmbedding JSONL
and/or rows in the warehouse table `hard_negatives` (schema namespace "negatives").
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

# `Example` and its JSONL reader/writer are defined once, in `m3core.data.examples` (`m3core.negatives.Example` and
# `write_jsonl` are those).
from m3core.data.examples import Example, read_jsonl, write_jsonl
from m3core.modes import OUTPUTS, MiningMode, Mode
from m3core.retrieval.corpus import encode_texts, read_corpus  # noqa: F401  (re-exported: m3core.negatives.read_corpus)
from m3core.retrieval.hybrid import mode_scores, model_weights, resolve_weights
from m3core.retrieval.retriever import Retriever, RetrieverConfig

log = logging.getLogger(__name__)

# Warehouse tables of this package; append migrations, never edit applied ones.
MIGRATIONS: list[tuple[str, str]] = [
    (
        "0001_hard_negatives",
        """
        CREATE TABLE mining_runs (
            run_id VARCHAR PRIMARY KEY,
            model VARCHAR,          -- the interim model (path or registry URI) that ranked the pool
            config VARCHAR,         -- JSON of NegativesConfig
            n_examples BIGINT,
            n_topped_up BIGINT,     -- examples that needed random negatives
            created_at TIMESTAMP
        );
        CREATE TABLE hard_negatives (
            example_id VARCHAR PRIMARY KEY,  -- hash of (run_id, query)
            run_id VARCHAR,
            query VARCHAR,
            pos VARCHAR[],
            neg VARCHAR[],
            neg_ranks INTEGER[],             -- 1-based rank in the model's ranking; NULL = random top-up
            pos_scores DOUBLE[],             -- teacher scores (NULL when not asked for)
            neg_scores DOUBLE[],
            pair_ids VARCHAR[],              -- the warehouse pairs this example came from, if any
            lang VARCHAR,
            prompt VARCHAR,
            type VARCHAR,
            created_at TIMESTAMP
        );
        """,
    ),
]


class NegativesConfig(BaseModel):
    """How to mine (`m3 negatives` flags, the `mine_hard_negatives` flow's parameters; saved with each run).

    `rank_range` is 1-based and inclusive; `candidates` (the ranked depth) is raised to its end if smaller.
    """

    model_config = ConfigDict(extra="forbid")

    mode: MiningMode = "dense"
    rank_range: tuple[int, int] = (2, 200)
    num_negatives: int = Field(15, ge=1)
    seed: int = 42
    teacher_scores: bool = Field(
        False, description="store the interim model's hybrid scores (pos/neg_scores)"
    )
    weights: str | tuple[float, float, float] | None = Field(
        None, description="hybrid weights or a preset name; None: the interim model's profile (else 'short')"
    )
    candidates: int = Field(200, ge=1)
    batch_size: int = Field(32, ge=1)
    query_max_length: int | None = None
    passage_max_length: int | None = None

    @model_validator(mode="after")
    def _check(self) -> NegativesConfig:
        lo, hi = self.rank_range
        if not 1 <= lo <= hi:
            raise ValueError(f"rank_range {self.rank_range}: need 1 <= start <= end")
        if self.weights is not None:
            resolve_weights(self.weights)
        return self


# Deprecated name (one release): `MiningConfig` is easy to mix up with the data pipeline's `MineConfig`.
MiningConfig = NegativesConfig


@dataclass
class MiningResult:
    """Mined examples, the passage pool they were ranked against, and counts for the log/report."""

    examples: list[Example]
    pool: list[str]
    n_topped_up: int
    n_short: int  # examples left with fewer than num_negatives (pool too small)


def normalize(text: str) -> str:
    """The form used to compare texts: whitespace collapsed, casefolded.

    >>> normalize("  The  Cat\\n") == normalize("the cat")
    True
    """
    return " ".join(text.split()).casefold()


def build_pool(examples: Sequence[Example], corpus: Sequence[str] | None) -> list[str]:
    """The corpus (or, without one, every positive and given negative) plus all positives, deduplicated."""
    texts: list[str] = list(corpus) if corpus is not None else [t for e in examples for t in (*e.pos, *e.neg)]
    texts += [p for e in examples for p in e.pos]
    pool, seen = [], set()
    for t in texts:
        if t.strip() and t not in seen:
            seen.add(t)
            pool.append(t)
    if not pool:
        raise ValueError("the passage pool is empty: give a corpus or examples with positives")
    return pool


def _sample(
    ex: Example,
    ranked_ids: np.ndarray,
    pool: list[str],
    norm_pool: list[str],
    cfg: NegativesConfig,
    rng: np.random.Generator,
) -> tuple[list[int], list[int | None]]:
    """Pick negatives for one example: doc ids and their ranks (None for random top-up)."""
    lo, hi = cfg.rank_range
    banned = {normalize(p) for p in ex.pos} | {normalize(ex.query)}
    window, seen = [], set(banned)
    for rank, doc in enumerate(ranked_ids[:hi].tolist(), start=1):
        if doc < 0 or rank < lo:
            continue
        key = norm_pool[doc]
        if key not in seen:
            seen.add(key)
            window.append((doc, rank))
    take = min(cfg.num_negatives, len(window))
    picked = [window[i] for i in sorted(rng.choice(len(window), size=take, replace=False))] if take else []
    docs, ranks = [d for d, _ in picked], [r for _, r in picked]
    if len(docs) < cfg.num_negatives:
        # Top-up: random pool passages, but never the skipped top ranks (likely false negatives).
        skipped = {norm_pool[d] for d in ranked_ids[: lo - 1].tolist() if d >= 0}
        chosen = {norm_pool[d] for d in docs}
        for doc in rng.permutation(len(pool)).tolist():
            key = norm_pool[doc]
            if key in banned or key in skipped or key in chosen:
                continue
            chosen.add(key)
            docs.append(doc)
            ranks.append(None)
            if len(docs) == cfg.num_negatives:
                break
    return docs, ranks


def mine_negatives(
    embedder: Any,
    examples: Sequence[Example],
    corpus: Sequence[str] | None = None,
    config: NegativesConfig | None = None,
    model_id: str | None = None,
    cache_dir: str | Path | None = None,
) -> MiningResult:
    """Mine hard negatives for ``examples`` with ``embedder`` (an `M3Embedder` of the interim model)."""
    cfg = config or NegativesConfig()
    if not examples:
        raise ValueError("no examples to mine negatives for")
    for i, ex in enumerate(examples):
        if not ex.query.strip() or not ex.pos or not all(p.strip() for p in ex.pos):
            raise ValueError(f"example {i}: needs a non-empty query and at least one non-empty positive")
    weights = model_weights(embedder, cfg.weights)
    pool = build_pool(examples, corpus)
    norm_pool = [normalize(t) for t in pool]
    outputs = {"dense"}
    if cfg.mode == "hybrid" or cfg.teacher_scores:
        outputs |= {n for n, w in zip(OUTPUTS, weights, strict=True) if w}
    outputs_t = tuple(o for o in OUTPUTS if o in outputs)
    common = {"outputs": outputs_t, "batch_size": cfg.batch_size, "model_id": model_id}
    pool_emb = encode_texts(
        embedder, pool, side="passage", max_length=cfg.passage_max_length,
        cache_dir=None if cache_dir is None else Path(cache_dir) / "pool", **common,
    )  # fmt: skip
    q_emb = encode_texts(
        embedder, [e.query for e in examples], side="query", max_length=cfg.query_max_length, **common
    )
    depth = max(cfg.rank_range[1], 1)
    retriever = Retriever(pool_emb, RetrieverConfig(weights=weights, candidates=max(cfg.candidates, depth)))
    search_mode: Mode = "dense" if cfg.mode == "dense" else "all"
    _, ranked = retriever.search(q_emb, search_mode, k=min(depth, len(pool)), weights=weights)

    index_of = {t: i for i, t in enumerate(pool)}
    out: list[Example] = []
    n_topped = n_short = 0
    for qi, ex in enumerate(examples):
        rng = np.random.default_rng([cfg.seed, qi])
        docs, ranks = _sample(ex, ranked[qi], pool, norm_pool, cfg, rng)
        n_topped += any(r is None for r in ranks)
        n_short += len(docs) < cfg.num_negatives
        mined = Example(
            query=ex.query, pos=list(ex.pos), neg=[pool[d] for d in docs], neg_ranks=ranks,
            prompt=ex.prompt, type=ex.type, lang=ex.lang, pair_ids=list(ex.pair_ids),
        )  # fmt: skip
        if cfg.teacher_scores:
            from m3core.scoring import hybrid_scores

            ids = np.array([index_of[p] for p in ex.pos] + docs, dtype=np.int64)
            ms = mode_scores(q_emb, pool_emb, qi, ids, outputs_t)
            zeros = np.zeros(len(ids), dtype=np.float32)
            parts = [zeros if p is None else p for p in (ms.dense, ms.sparse, ms.colbert)]
            teacher = np.asarray(hybrid_scores(*parts, weights=weights), dtype=np.float64).tolist()
            mined.pos_scores, mined.neg_scores = teacher[: len(ex.pos)], teacher[len(ex.pos) :]
        out.append(mined)
    if n_topped:
        log.warning("%d of %d examples had too few candidates in ranks %s: topped up with random passages",
                    n_topped, len(out), cfg.rank_range)  # fmt: skip
    if n_short:
        log.warning("%d examples have fewer than %d negatives: the pool (%d passages) is too small",
                    n_short, cfg.num_negatives, len(pool))  # fmt: skip
    return MiningResult(out, pool, n_topped, n_short)


# ---------------------------------------------------------------------------------------------- I/O
def read_examples(path: str | Path) -> list[Example]:
    """FlagEmbedding JSONL (a file or a directory of them), read and validated by the one reader training uses
    (`m3core.data.examples.read_jsonl`: a bad line is an error `file:line: reason`). ``prompt``/``type``/``lang``
    are kept; teacher scores are dropped (they score the input's negatives, which mining replaces)."""
    examples, _ = read_jsonl(path)
    if not examples:
        raise ValueError("the training data has no examples")
    return [replace(e, pos_scores=None, neg_scores=None) for e in examples]


def mine(*args: Any, **kwargs: Any) -> MiningResult:
    """Deprecated alias of `mine_negatives` (one release): the data pipeline has a `mine` too."""
    import warnings

    warnings.warn("m3core.negatives.mine is deprecated: use mine_negatives", DeprecationWarning, stacklevel=2)
    return mine_negatives(*args, **kwargs)


def mine_file(
    embedder: Any,
    train_file: str | Path,
    out_file: str | Path,
    config: NegativesConfig | None = None,
    *,
    corpus: Sequence[str] | None = None,
    model_id: str | None = None,
    cache_dir: str | Path | None = None,
) -> dict[str, Any]:
    """Negatives for every line of a FlagEmbedding JSONL file, written as FlagEmbedding JSONL: what
    `m3 negatives --input F --output O` and the `mine_hard_negatives` flow do. Returns the run's counts."""
    result = mine_negatives(
        embedder, read_examples(train_file), corpus, config, model_id=model_id, cache_dir=cache_dir
    )
    write_jsonl(result.examples, out_file)
    return {
        "file": str(out_file),
        "examples": len(result.examples),
        "pool": len(result.pool),
        "topped_up": result.n_topped_up,
        "short": result.n_short,
    }


def examples_from_warehouse(
    con: Any, kinds: Sequence[str] | None = None, langs: Sequence[str] | None = None, limit: int | None = None
) -> list[Example]:
    """Examples from the `pairs` table: one per distinct query, all its positives (optionally filtered)."""
    where, params = [], []
    if kinds:
        where.append(f"kind IN ({','.join('?' * len(kinds))})")
        params += list(kinds)
    if langs:
        where.append(f"lang IN ({','.join('?' * len(langs))})")
        params += list(langs)
    sql = (
        "SELECT query, list(DISTINCT positive ORDER BY positive), any_value(lang), list(pair_id ORDER BY pair_id) "
        f"FROM pairs {'WHERE ' + ' AND '.join(where) if where else ''} GROUP BY query ORDER BY query"
    )
    if limit:
        sql += f" LIMIT {int(limit)}"
    rows = con.execute(sql, params).fetchall()
    return [Example(query=q, pos=list(p), lang=lang, pair_ids=list(ids)) for q, p, lang, ids in rows]


def corpus_from_warehouse(con: Any, langs: Sequence[str] | None = None) -> list[str]:
    """Every distinct positive of the `pairs` table (optionally of some languages) as the passage pool."""
    if langs:
        q = f"SELECT DISTINCT positive FROM pairs WHERE lang IN ({','.join('?' * len(langs))}) ORDER BY 1"
        return [r[0] for r in con.execute(q, list(langs)).fetchall()]
    return [r[0] for r in con.execute("SELECT DISTINCT positive FROM pairs ORDER BY 1").fetchall()]


def write_warehouse(
    warehouse: Any, result: MiningResult, config: NegativesConfig, model_id: str, run_id: str | None = None
) -> str:
    """Insert a mining run and its examples into the warehouse (namespace "negatives"); returns the run id."""
    import pyarrow as pa

    warehouse.migrate("negatives", MIGRATIONS)
    now = datetime.now(UTC).replace(tzinfo=None)
    run_id = run_id or hashlib.sha256(f"{model_id}|{now.isoformat()}".encode()).hexdigest()[:16]
    exs = result.examples
    table = pa.table({
        "example_id": [hashlib.sha256(f"{run_id}|{e.query}".encode()).hexdigest()[:32] for e in exs],
        "run_id": [run_id] * len(exs),
        "query": [e.query for e in exs],
        "pos": [e.pos for e in exs],
        "neg": [e.neg for e in exs],
        "neg_ranks": pa.array([e.neg_ranks for e in exs], type=pa.list_(pa.int32())),
        "pos_scores": pa.array([e.pos_scores for e in exs], type=pa.list_(pa.float64())),
        "neg_scores": pa.array([e.neg_scores for e in exs], type=pa.list_(pa.float64())),
        "pair_ids": pa.array([e.pair_ids for e in exs], type=pa.list_(pa.string())),
        "lang": pa.array([e.lang for e in exs], type=pa.string()),
        "prompt": pa.array([e.prompt for e in exs], type=pa.string()),
        "type": pa.array([e.type for e in exs], type=pa.string()),
        "created_at": [now] * len(exs),
    })  # fmt: skip
    con = warehouse.con
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute(
            "INSERT INTO mining_runs VALUES (?, ?, ?, ?, ?, ?)",
            [run_id, model_id, config.model_dump_json(), len(exs), result.n_topped_up, now],
        )
        con.register("_mined", table)
        con.execute("INSERT INTO hard_negatives BY NAME SELECT * FROM _mined")
        con.unregister("_mined")
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    log.info("warehouse %s: mining run %s with %d examples", warehouse.path, run_id, len(exs))
    return run_id
