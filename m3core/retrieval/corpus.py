"""Encode texts in batches (with a progress bar) into the three M3 outputs, and keep them on disk for reuse.

A cache directory holds ``dense.npy``, ``lexical.npz`` (CSR-like: offsets, token ids, weights),
``colbert.npz`` (all vectors concatenated + offsets) and ``meta.json``. The meta records a key made of
the model, the texts, the outputs and the max length; a later call with the same key loads instead of
re-encoding, and any change (another checkpoint, one edited passage) re-encodes.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from m3core.modes import OUTPUTS

log = logging.getLogger(__name__)


@dataclass
class Embeddings:
    """The M3 outputs for ``n`` texts; an output that was not computed is None.

    dense: [n, d] float32 (L2-normalised); lexical: n dicts token id (str) -> weight;
    colbert: n arrays [t_i, d_c].
    """

    dense: np.ndarray | None = None
    lexical: list[dict[str, float]] | None = None
    colbert: list[np.ndarray] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        for part in (self.dense, self.lexical, self.colbert):
            if part is not None:
                return len(part)
        return 0

    @property
    def outputs(self) -> tuple[str, ...]:
        have = {"dense": self.dense, "sparse": self.lexical, "colbert": self.colbert}
        return tuple(name for name, part in have.items() if part is not None)

    def take(self, ids: Sequence[int]) -> Embeddings:
        """The embeddings of the texts at positions ``ids``."""
        ids = list(ids)
        return Embeddings(
            dense=None if self.dense is None else self.dense[ids],
            lexical=None if self.lexical is None else [self.lexical[i] for i in ids],
            colbert=None if self.colbert is None else [self.colbert[i] for i in ids],
            meta=dict(self.meta),
        )

    def require(self, *outputs: str) -> None:
        missing = [o for o in outputs if o not in self.outputs]
        if missing:
            raise ValueError(
                f"embeddings lack output(s) {missing} (have {list(self.outputs)}); encode with them"
            )

    def save(self, directory: str | Path) -> None:
        """Write the embeddings under ``directory`` (created if needed)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        if self.dense is not None:
            np.save(d / "dense.npy", self.dense.astype(np.float32))
        if self.lexical is not None:
            offsets = np.cumsum([0] + [len(w) for w in self.lexical]).astype(np.int64)
            tokens = np.array([int(t) for w in self.lexical for t in w], dtype=np.int64)
            weights = np.array([v for w in self.lexical for v in w.values()], dtype=np.float32)
            np.savez(d / "lexical.npz", offsets=offsets, tokens=tokens, weights=weights)
        if self.colbert is not None:
            offsets = np.cumsum([0] + [len(v) for v in self.colbert]).astype(np.int64)
            dim = self.colbert[0].shape[1] if self.colbert else 0
            flat = np.concatenate(self.colbert) if self.colbert else np.zeros((0, dim), np.float32)
            np.savez(d / "colbert.npz", offsets=offsets, vecs=flat.astype(np.float32))
        (d / "meta.json").write_text(json.dumps({**self.meta, "outputs": list(self.outputs), "n": len(self)}))

    @classmethod
    def concat(cls, parts: Sequence[Embeddings], meta: dict | None = None) -> Embeddings:
        """The passages of `parts` in order, as one (e.g. a corpus encoded in shards)."""
        if not parts:
            raise ValueError("no embeddings to concatenate")
        first = parts[0]
        if any(p.outputs != first.outputs for p in parts):
            raise ValueError(f"shards hold different outputs: {sorted({p.outputs for p in parts})}")
        return cls(
            dense=None if first.dense is None else np.concatenate([p.dense for p in parts]),
            lexical=None if first.lexical is None else [w for p in parts for w in p.lexical],
            colbert=None if first.colbert is None else [v for p in parts for v in p.colbert],
            meta=dict(meta or {}),
        )

    @classmethod
    def load(cls, directory: str | Path) -> Embeddings:
        d = Path(directory)
        meta_path = d / "meta.json"
        if not meta_path.exists():
            raise FileNotFoundError(f"{d}: not an embeddings directory (no meta.json)")
        meta = json.loads(meta_path.read_text())
        out = cls(meta=meta)
        if (d / "dense.npy").exists():
            out.dense = np.load(d / "dense.npy")
        if (d / "lexical.npz").exists():
            z = np.load(d / "lexical.npz")
            off, tok, w = z["offsets"], z["tokens"], z["weights"]
            out.lexical = [
                {str(int(t)): float(v) for t, v in zip(tok[a:b], w[a:b], strict=True)}
                for a, b in itertools.pairwise(off)
            ]
        if (d / "colbert.npz").exists():
            z = np.load(d / "colbert.npz")
            off, vecs = z["offsets"], z["vecs"]
            out.colbert = [vecs[a:b] for a, b in itertools.pairwise(off)]
        return out


def cache_key(
    model_id: str,
    texts: Sequence[str],
    outputs: Sequence[str],
    max_length: int | None,
    side: str,
    mcls: bool = False,
) -> str:
    """A digest of everything the embeddings depend on."""
    h = hashlib.sha256()
    h.update(json.dumps([model_id, sorted(outputs), max_length, side, *(["mcls"] if mcls else [])]).encode())
    for t in texts:
        h.update(hashlib.sha256(t.encode()).digest())
    return h.hexdigest()


def model_fingerprint(model: str | Path) -> str:
    """Identify a model directory by its path and weight files' sizes and mtimes (a retrained checkpoint
    saved in place gets a new fingerprint); anything that is not a directory is used as given."""
    p = Path(model)
    if not p.is_dir():
        return str(model)
    stats = sorted(
        (f.name, f.stat().st_size, int(f.stat().st_mtime))
        for f in p.iterdir()
        if f.is_file() and f.suffix != ".json"
    )
    return json.dumps([str(p.resolve()), stats])


def encode_texts(
    embedder: Any,
    texts: Sequence[str],
    *,
    outputs: Sequence[str] = OUTPUTS,
    side: str = "passage",
    batch_size: int = 32,
    max_length: int | None = None,
    cache_dir: str | Path | None = None,
    model_id: str | None = None,
    chunk_size: int = 1024,
    mcls: bool = False,
) -> Embeddings:
    """Encode ``texts`` with an `M3Embedder` (``side`` "query" or "passage"), reusing ``cache_dir`` when valid.

    Texts go to the embedder in chunks of ``chunk_size`` so the progress bar moves and memory stays flat;
    the bar is hidden when logging is above INFO. ``mcls``: encode in MCLS mode (long documents; `m3core.mcls`).
    """
    unknown = set(outputs) - set(OUTPUTS)
    if unknown or not outputs:
        raise ValueError(f"outputs must be a non-empty subset of {OUTPUTS}, got {list(outputs)}")
    if side not in ("query", "passage"):
        raise ValueError(f"side must be 'query' or 'passage', got {side!r}")
    model_id = model_id or str(getattr(embedder, "model_name_or_path", type(embedder).__name__))
    key = cache_key(model_id, texts, outputs, max_length, side, mcls)
    if cache_dir is not None and (Path(cache_dir) / "meta.json").exists():
        cached = Embeddings.load(cache_dir)
        if cached.meta.get("key") == key:
            log.info("reusing %d %s embeddings from %s", len(cached), side, cache_dir)
            return cached
        log.info("cache %s is stale (other model, texts or outputs): re-encoding", cache_dir)

    encode = embedder.encode_queries if side == "query" else embedder.encode_corpus
    want = {"return_dense": "dense" in outputs, "return_sparse": "sparse" in outputs}
    want["return_colbert_vecs"] = "colbert" in outputs
    extra = {"mcls": True} if mcls else {}  # only then: an embedder without the MCLS mode still works
    dense: list[np.ndarray] = []
    lexical: list[dict[str, float]] = []
    colbert: list[np.ndarray] = []
    bar = tqdm(
        total=len(texts), desc=f"encode {side}s", unit="text", disable=not log.isEnabledFor(logging.INFO)
    )
    for start in range(0, len(texts), chunk_size):
        chunk = list(texts[start : start + chunk_size])
        out = encode(chunk, batch_size=batch_size, max_length=max_length, **want, **extra)
        if want["return_dense"]:
            dense.append(np.asarray(out["dense_vecs"], dtype=np.float32).reshape(len(chunk), -1))
        if want["return_sparse"]:
            lexical.extend({str(t): float(v) for t, v in w.items()} for w in out["lexical_weights"])
        if want["return_colbert_vecs"]:
            colbert.extend(np.asarray(v, dtype=np.float32) for v in out["colbert_vecs"])
        bar.update(len(chunk))
    bar.close()
    emb = Embeddings(
        dense=(np.concatenate(dense) if dense else np.zeros((0, 0), np.float32))
        if want["return_dense"]
        else None,
        lexical=lexical if want["return_sparse"] else None,
        colbert=colbert if want["return_colbert_vecs"] else None,
        meta={"key": key, "model": model_id, "side": side, "max_length": max_length, "mcls": mcls},
    )
    if cache_dir is not None:
        emb.save(cache_dir)
        log.info("wrote %d %s embeddings to %s", len(emb), side, cache_dir)
    return emb


def read_corpus(path: str | Path) -> list[str]:
    """The passages of a corpus file: `.txt` (one a line) or `.jsonl`/`.json` lines with `text` (and an optional
    `title`, joined in front: BEIR corpus files work). Blank lines are skipped; a bad line or an empty file is a
    ValueError naming it."""
    path = Path(path)
    out: list[str] = []
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            if path.suffix not in (".jsonl", ".json"):
                out.append(line.rstrip("\n"))
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{n}: not JSON ({err.msg})") from None
            if not isinstance(row, dict) or not isinstance(row.get("text"), str):
                raise ValueError(f"{path}:{n}: expected an object with a 'text' string")
            title = (row.get("title") or "").strip()
            out.append(f"{title} {row['text']}".strip() if title else row["text"])
    if not out:
        raise ValueError(f"{path}: no passages")
    return out
