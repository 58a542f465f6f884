"""The vocabulary of M3 outputs, retrieval modes and hybrid weights, named once (a light module: importing it
loads nothing else).

Two concepts that share three names:
- `OUTPUTS` (`Output`): the three representations a model outputs and trains — `dense` vectors, `sparse`
  (lexical) weights, `colbert` vectors; also the order of every weight triple (w_dense, w_sparse, w_colbert);
- `MODES` (`Mode`): the ways to retrieve with them:
  - `dense`, `sparse`, `colbert`: one representation each (`SINGLE_MODES`);
  - `dense+sparse`: the union of dense and sparse candidates re-scored with (w_dense, w_sparse);
  - `all`: the same union re-scored with all three weights (paper Eq. 1).
`MODE_OUTPUTS` maps each mode to the outputs it needs; `HYBRID_PRESETS` holds the paper's hybrid weights;
`FLAG_SCORE_KEYS` is the one translation to FlagEmbedding's spelling of the hybrid modes; `MINING_MODES` are the
rankings hard-negative mining offers.
"""

from __future__ import annotations

from typing import Literal

Output = Literal["dense", "sparse", "colbert"]
OUTPUTS: tuple[Output, ...] = ("dense", "sparse", "colbert")
# The outputs with a head of their own (`M3Model.sparse_head`, `.colbert_head`); dense is the encoder's CLS state.
HEADS: tuple[Output, ...] = ("sparse", "colbert")

Mode = Literal["dense", "sparse", "colbert", "dense+sparse", "all"]
MODES: tuple[Mode, ...] = ("dense", "sparse", "colbert", "dense+sparse", "all")
# The single-representation modes (one per output, named like it) a model has only once its heads are trained
# (a plain backbone: dense).
SINGLE_MODES: tuple[Mode, ...] = OUTPUTS

# The outputs each mode needs, on both the query and the corpus side (`colbert` re-ranks dense candidates).
MODE_OUTPUTS: dict[Mode, tuple[Output, ...]] = {
    "dense": ("dense",),
    "sparse": ("sparse",),
    "colbert": ("dense", "colbert"),
    "dense+sparse": ("dense", "sparse"),
    "all": OUTPUTS,
}

# How hard negatives are mined (`m3core.negatives.NegativesConfig.mode`): the pool ranked by `dense`, or by the
# `hybrid` (retrieval mode `all`).
MiningMode = Literal["dense", "hybrid"]
MINING_MODES: tuple[MiningMode, ...] = ("dense", "hybrid")

# (w_dense, w_sparse, w_colbert) of the hybrid (paper Eq. 1).
Weights = tuple[float, float, float]
# The paper's hybrid weights: short passages (MIRACL-like) and long documents (MLDR-like).
HYBRID_PRESETS: dict[str, Weights] = {"short": (1.0, 0.3, 1.0), "long": (0.15, 0.5, 0.35)}

# FlagEmbedding's names for the modes, as `compute_score` returns them (`M3Embedder.compute_score` keeps them, so
# the two are interchangeable): the hybrids are `sparse+dense` (our `dense+sparse`) and `colbert+sparse+dense`
# (our `all`). This is the one place that translates; the dict's order is FlagEmbedding's key order.
FLAG_SCORE_KEYS: dict[Mode, str] = {
    "colbert": "colbert",
    "sparse": "sparse",
    "dense": "dense",
    "dense+sparse": "sparse+dense",
    "all": "colbert+sparse+dense",
}
# FlagEmbedding's key → our mode.
MODE_OF_FLAG_KEY: dict[str, Mode] = {key: mode for mode, key in FLAG_SCORE_KEYS.items()}


def outputs_for(modes: list[str] | tuple[str, ...]) -> tuple[Output, ...]:
    """The M3 outputs to encode so that every mode in ``modes`` can run (in `OUTPUTS` order).

    >>> outputs_for(["colbert", "sparse"])
    ('dense', 'sparse', 'colbert')
    >>> outputs_for(["bm25"])
    Traceback (most recent call last):
    ...
    ValueError: unknown retrieval mode(s) ['bm25']: expected some of ['dense', 'sparse', 'colbert', 'dense+sparse', 'all']
    """
    bad = [m for m in modes if m not in MODE_OUTPUTS]
    if bad:
        raise ValueError(f"unknown retrieval mode(s) {bad}: expected some of {list(MODES)}")
    need = {o for m in modes for o in MODE_OUTPUTS[m]}
    return tuple(o for o in OUTPUTS if o in need)
