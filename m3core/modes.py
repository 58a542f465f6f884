"""The retrieval modes of an M3 model, named once (a light module: importing it loads nothing else).

- `dense`, `sparse`, `colbert`: one representation each;
- `dense+sparse`: the union of dense and sparse candidates re-scored with (w_dense, w_sparse);
- `all`: the same union re-scored with all three weights (paper Eq. 1).
"""

from __future__ import annotations

from typing import Literal

Mode = Literal["dense", "sparse", "colbert", "dense+sparse", "all"]
MODES: tuple[Mode, ...] = ("dense", "sparse", "colbert", "dense+sparse", "all")
# The single-representation modes a model has only once its heads are trained (a plain backbone: dense).
SINGLE_MODES: tuple[Mode, ...] = ("dense", "sparse", "colbert")
