"""`M3Embedder`: the inference API, named like FlagEmbedding's `BGEM3FlagModel` / `M3Embedder` so users can switch.

    >>> emb = M3Embedder("BAAI/bge-m3")                                        # doctest: +SKIP
    >>> out = emb.encode(["hello"], return_dense=True, return_sparse=True, return_colbert_vecs=True)  # doctest: +SKIP
    >>> out["dense_vecs"].shape, out["lexical_weights"][0], out["colbert_vecs"][0].shape           # doctest: +SKIP

How it encodes: all texts are tokenized once (one fast-tokenizer call), sorted by length, cut into batches of at
most `batch_size` texts and `max_batch_tokens` padded tokens (so 8192-token documents don't share a batch size
with sentences), run by a backend, and restored to input order.

Backends: a backend ("runner") turns one padded numpy batch `(input_ids, attention_mask, cls_mask)` into
`(dense, sparse, colbert, colbert_mask)` numpy arrays; everything else (tokenization, batching, lexical dicts,
ColBERT rows, prompts, scoring) is this module's, shared. `torch` (`TorchRunner`: `M3Model` under
`torch.inference_mode`, fp16/bf16 on GPU) or `onnx` (`m3core.onnx_runtime.OnnxRunner`: an `m3 export-onnx`
directory in onnxruntime, CPU), chosen by `backend=`, by default `onnx` exactly when the path is an export.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from m3core import scoring
from m3core.config import M3Config
from m3core.heads.sparse import weights_to_dicts
from m3core.mcls import insert_cls
from m3core.model import M3Model
from m3core.modes import FLAG_SCORE_KEYS, Mode
from m3core.onnx_runtime import is_onnx_export

logger = logging.getLogger(__name__)

# `compute_score`'s keys, spelled and ordered as FlagEmbedding's (translated from our modes in `m3core.modes`).
SCORE_KEYS = tuple(FLAG_SCORE_KEYS.values())


def validate_texts(texts: str | Iterable[str], what: str = "texts") -> tuple[list[str], bool]:
    """Texts as a list (and whether a single string was given); a clear error for bad items."""
    if isinstance(texts, str):
        texts, single = [texts], True
    else:
        if texts is None or isinstance(texts, (bytes, dict)) or not isinstance(texts, Iterable):
            raise ValueError(f"{what} must be a string or a list of strings, got {type(texts).__name__}")
        texts, single = list(texts), False
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise ValueError(f"{what}[{i}] is {type(text).__name__}, not a string: {text!r:.80}")
        if not text.strip():
            raise ValueError(f"{what}[{i}] is an empty string")
    return texts, single


class TorchRunner:
    """The torch backend: an `M3Model` on one device; a padded numpy batch in, numpy outputs out.

    Dense-only calls run no head work: `M3Model.forward` skips the heads whose flags are off.
    """

    def __init__(self, model: M3Model, device: torch.device, dtype: torch.dtype):
        self.model = model.to(device, dtype=dtype).eval()
        self.device = device

    @property
    def config(self) -> M3Config:
        return self.model.config

    @property
    def tokenizer(self):
        return self.model.tokenizer

    @property
    def max_tokens(self) -> int:
        return self.model.max_tokens

    @property
    def dense_dim(self) -> int:
        return int(self.model.backbone.config.hidden_size)

    def check_length(self, max_length: int) -> None:
        self.model.check_length(max_length)

    @torch.inference_mode()
    def __call__(
        self,
        input_ids: np.ndarray,
        attention_mask: np.ndarray,
        cls_mask: np.ndarray | None,
        *,
        dense: bool,
        sparse: bool,
        colbert: bool,
    ) -> tuple[np.ndarray | None, ...]:
        """`(dense [B, H], sparse [B, L], colbert [B, L-1, D], colbert_mask [B, L-1])` float32/bool, None where
        not asked."""
        t_cls = None if cls_mask is None else torch.from_numpy(cls_mask).to(self.device)
        out = self.model(
            torch.from_numpy(input_ids).to(self.device),
            torch.from_numpy(attention_mask).to(self.device),
            dense=dense,
            sparse=sparse,
            colbert=colbert,
            cls_mask=t_cls,
        )
        return (
            out.dense.float().cpu().numpy() if dense else None,
            out.sparse.float().cpu().numpy() if sparse else None,
            out.colbert.float().cpu().numpy() if colbert else None,
            out.colbert_mask.cpu().numpy() if colbert else None,
        )


class M3Embedder:
    """Encode texts into dense vectors, lexical weights and ColBERT vectors; score pairs in all modes.

    Args:
        model_name_or_path: a model directory, a Hub id, or an `M3Model` already in memory.
        normalize_embeddings: override the model's saved dense normalization.
        use_fp16 / use_bf16: half precision on GPU (ignored on CPU, where fp32 is both faster and exact).
        device: `cuda`, `cuda:1`, `cpu`…; default the first GPU if there is one. (`devices` is accepted for
            FlagEmbedding compatibility, with a single device.)
        batch_size: texts per batch; `max_batch_tokens` caps padded tokens per batch.
        query_max_length / passage_max_length: truncation; default the model config's, capped at the backbone's
            positions.
        query_instruction_for_retrieval / query_instruction_format: prefix for queries (`format(instr, query)`);
            default the model profile's `query_instruction` (`m3_config.json`; e5: `query: `). Pass `""` for none.
        passage_instruction_for_retrieval: prefix for passages in `encode_corpus`; default the profile's
            `passage_instruction` (e5: `passage: `). Pass `""` for none.
        mcls: encode long texts in MCLS mode (see `m3core.mcls`).
        backend: `torch` or `onnx` (an `m3 export-onnx` directory, run by onnxruntime on CPU); default `onnx`
            when `model_name_or_path` is such a directory, else `torch`. Both return the same structures.
        onnx_variant: with `onnx`, which graph of the export: `fp32` (default) or `int8` (`--int8` exports).
        threads: with `onnx`, onnxruntime's intra-op threads (default `torch.get_num_threads()`).

    Attributes: `model` is the `M3Model` with the torch backend and None with `onnx`; `config` (the model's
    `M3Config`) and `tokenizer` are there with both.
    """

    def __init__(
        self,
        model_name_or_path: str | M3Model,
        *,
        normalize_embeddings: bool | None = None,
        use_fp16: bool = True,
        use_bf16: bool = False,
        device: str | None = None,
        devices: str | Sequence[str] | None = None,
        pooling_method: str | None = None,
        batch_size: int = 256,
        max_batch_tokens: int = 32768,
        query_max_length: int | None = None,
        passage_max_length: int | None = None,
        query_instruction_for_retrieval: str | None = None,
        query_instruction_format: str = "{}{}",
        passage_instruction_for_retrieval: str | None = None,
        return_dense: bool = True,
        return_sparse: bool = False,
        return_colbert_vecs: bool = False,
        mcls: bool = False,
        trust_remote_code: bool = False,
        show_progress: bool | None = None,
        backend: str | None = None,
        onnx_variant: str = "fp32",
        threads: int | None = None,
        **unused: Any,
    ):
        if unused:
            logger.warning("M3Embedder: ignoring unsupported arguments %s", sorted(unused))
        if devices is not None and device is None:
            if not isinstance(devices, str):
                devices = list(devices)
                if len(devices) != 1:
                    raise ValueError(
                        f"devices={devices}: M3Embedder runs on one device; start one per device"
                    )
                devices = devices[0]
            device = str(devices)
        backend = _choose_backend(model_name_or_path, backend)
        if pooling_method is not None and pooling_method not in ("cls", "mean"):
            raise ValueError(f"pooling_method must be 'cls' or 'mean', got {pooling_method!r}")
        if backend == "onnx":
            from m3core.onnx_runtime import OnnxRunner

            if device is not None and torch.device(device).type != "cpu":
                raise ValueError(
                    f"backend='onnx' runs on CPU (onnxruntime's CPU provider), got device={device!r}"
                )
            self.runner = OnnxRunner(model_name_or_path, variant=onnx_variant, threads=threads)
            _check_fixed_at_export(
                self.runner.config, model_name_or_path, normalize_embeddings, pooling_method
            )
            self.model, self.device = None, torch.device("cpu")
        else:
            if onnx_variant != "fp32":
                raise ValueError(
                    f"onnx_variant={onnx_variant!r} needs an `m3 export-onnx` directory; "
                    f"{model_name_or_path} runs in torch"
                )
            if isinstance(model_name_or_path, M3Model):
                model = model_name_or_path
            else:
                model = M3Model.from_pretrained(model_name_or_path, trust_remote_code=trust_remote_code)
            if normalize_embeddings is not None:
                model.config.normalize_dense = normalize_embeddings
            if pooling_method is not None:
                model.config.pooling = pooling_method
            self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
            dtype = torch.float32
            if self.device.type == "cuda":
                dtype = torch.bfloat16 if use_bf16 else (torch.float16 if use_fp16 else torch.float32)
            self.runner = TorchRunner(model, self.device, dtype)
            self.model = model
        self.backend = backend
        self.tokenizer = self.runner.tokenizer
        cfg = self.config
        if batch_size < 1 or max_batch_tokens < 1:
            raise ValueError(
                f"batch_size ({batch_size}) and max_batch_tokens ({max_batch_tokens}) must be >= 1"
            )
        self.batch_size, self.max_batch_tokens = batch_size, max_batch_tokens
        self.query_max_length = self._length(query_max_length, cfg.query_max_length)
        self.passage_max_length = self._length(passage_max_length, cfg.passage_max_length)
        # The profile the model was trained with applies unless the caller says otherwise ("" = no prefix).
        self.query_instruction_for_retrieval = (
            cfg.query_instruction
            if query_instruction_for_retrieval is None
            else query_instruction_for_retrieval
        )
        self.query_instruction_format = query_instruction_format
        self.passage_instruction_for_retrieval = (
            cfg.passage_instruction
            if passage_instruction_for_retrieval is None
            else passage_instruction_for_retrieval
        )
        self.return_dense, self.return_sparse, self.return_colbert_vecs = (
            return_dense,
            return_sparse,
            return_colbert_vecs,
        )
        self.mcls = mcls
        self.show_progress = show_progress

    @property
    def config(self) -> M3Config:
        """The model's `M3Config` (read at each call: prompts, lengths and MCLS stride may be changed on it)."""
        return self.runner.config

    def _length(self, asked: int | None, default: int) -> int:
        if asked is None:
            return min(default, self.runner.max_tokens)
        self.runner.check_length(asked)
        return asked

    # ------------------------------------------------------------------ encoding
    def encode_queries(self, queries: str | Sequence[str], **kwargs: Any) -> dict[str, Any]:
        """`encode` with the query max length and the query instruction, if any."""
        texts, single = validate_texts(queries, "queries")
        if self.query_instruction_for_retrieval:
            texts = [
                self.query_instruction_format.format(self.query_instruction_for_retrieval, q) for q in texts
            ]
        kwargs.setdefault("max_length", self.query_max_length)
        return self.encode(texts[0] if single else texts, **kwargs)

    def encode_corpus(self, corpus: str | Sequence[str], **kwargs: Any) -> dict[str, Any]:
        """`encode` with the passage max length and the passage instruction, if any."""
        texts, single = validate_texts(corpus, "corpus")
        if self.passage_instruction_for_retrieval:
            texts = [self.passage_instruction_for_retrieval + p for p in texts]
        kwargs.setdefault("max_length", self.passage_max_length)
        return self.encode(texts[0] if single else texts, **kwargs)

    def encode(
        self,
        sentences: str | Sequence[str],
        batch_size: int | None = None,
        max_length: int | None = None,
        return_dense: bool | None = None,
        return_sparse: bool | None = None,
        return_colbert_vecs: bool | None = None,
        mcls: bool | None = None,
    ) -> dict[str, Any]:
        """Encode texts. Returns FlagEmbedding's dict: `dense_vecs` `[n, d]` float32, `lexical_weights`
        (per text `{token_id_str: weight}`), `colbert_vecs` (per text `[t_i, d_c]`); None for outputs not asked.
        A single string gives single items (a `[d]` vector, one dict, one matrix)."""
        texts, single = validate_texts(sentences, "sentences")
        dense = self.return_dense if return_dense is None else return_dense
        sparse = self.return_sparse if return_sparse is None else return_sparse
        colbert = self.return_colbert_vecs if return_colbert_vecs is None else return_colbert_vecs
        if not (dense or sparse or colbert):
            raise ValueError(
                "nothing to encode: set at least one of return_dense, return_sparse, return_colbert_vecs"
            )
        max_length = self.passage_max_length if max_length is None else max_length
        self.runner.check_length(max_length)
        if not texts:  # nothing to encode: empty outputs of the right shapes
            dim = self.runner.dense_dim
            return {
                "dense_vecs": np.zeros((0, dim), dtype=np.float32) if dense else None,
                "lexical_weights": [] if sparse else None,
                "colbert_vecs": [] if colbert else None,
            }
        mcls = self.mcls if mcls is None else mcls
        ids, cls_positions = self._tokenize(texts, max_length, mcls)
        out = self._encode_ids(ids, cls_positions, batch_size or self.batch_size, dense, sparse, colbert)
        if single:
            out = {k: (v[0] if v is not None else None) for k, v in out.items()}
        return out

    def _tokenize(
        self, texts: list[str], max_length: int, mcls: bool
    ) -> tuple[list[list[int]], list[list[int]] | None]:
        ids = self.tokenizer(
            texts,
            truncation=True,
            max_length=max_length,
            return_attention_mask=False,
            return_token_type_ids=False,
        )["input_ids"]
        if not mcls:
            return ids, None
        cls_id = self.tokenizer.cls_token_id
        if cls_id is None:
            raise ValueError("MCLS needs a tokenizer with a CLS token")
        pairs = [insert_cls(x, cls_id, self.config.mcls_stride, self.runner.max_tokens) for x in ids]
        return [p[0] for p in pairs], [p[1] for p in pairs]

    def _batches(self, lengths: np.ndarray, batch_size: int) -> list[np.ndarray]:
        """Index batches over texts sorted longest first, each within `batch_size` texts and the token budget."""
        order = np.argsort(-lengths, kind="stable")
        batches, start = [], 0
        while start < len(order):
            longest = int(lengths[order[start]])
            n = max(1, min(batch_size, self.max_batch_tokens // max(longest, 1)))
            batches.append(order[start : start + n])
            start += n
        return batches

    def _encode_ids(
        self,
        ids: list[list[int]],
        cls_positions: list[list[int]] | None,
        batch_size: int,
        dense: bool,
        sparse: bool,
        colbert: bool,
    ) -> dict[str, Any]:
        n = len(ids)
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=n)
        batches = self._batches(lengths, batch_size)
        pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        dense_out: np.ndarray | None = None
        lexical: list[Any] = [None] * n if sparse else None
        colbert_out: list[Any] = [None] * n if colbert else None
        show = (
            self.show_progress
            if self.show_progress is not None
            else (len(batches) > 1 and logger.getEffectiveLevel() <= logging.INFO)
        )
        for index in tqdm(batches, desc="Encoding", unit="batch", disable=not show):
            width = int(lengths[index].max())
            input_ids = np.full((len(index), width), pad_id, dtype=np.int64)
            mask = np.zeros((len(index), width), dtype=np.int64)
            for row, i in enumerate(index):
                input_ids[row, : lengths[i]] = ids[i]
                mask[row, : lengths[i]] = 1
            cls_mask = None
            if cls_positions is not None:
                cls_mask = np.zeros((len(index), width), dtype=bool)
                for row, i in enumerate(index):
                    cls_mask[row, cls_positions[i]] = True
            dense_b, sparse_b, colbert_b, keep = self.runner(
                input_ids, mask, cls_mask, dense=dense, sparse=sparse, colbert=colbert
            )
            if dense:
                if dense_out is None:
                    dense_out = np.empty((n, dense_b.shape[1]), dtype=np.float32)
                dense_out[index] = dense_b
            if sparse:
                for i, d in zip(index, weights_to_dicts(sparse_b, input_ids), strict=True):
                    lexical[i] = d
            if colbert:
                for row, i in enumerate(index):
                    colbert_out[i] = colbert_b[row][keep[row]]
        return {"dense_vecs": dense_out, "lexical_weights": lexical, "colbert_vecs": colbert_out}

    # ------------------------------------------------------------------ scoring
    def compute_score(
        self,
        sentence_pairs: Sequence[tuple[str, str]] | tuple[str, str],
        batch_size: int | None = None,
        max_query_length: int | None = None,
        max_passage_length: int | None = None,
        weights_for_different_modes: Sequence[float] | None = None,
    ) -> dict[str, list[float] | float]:
        """Score (query, passage) pairs in every mode, as FlagEmbedding does.

        Keys (FlagEmbedding's, `SCORE_KEYS`; `m3core.modes.FLAG_SCORE_KEYS` maps our mode names to them):
        `dense`, `sparse`, `colbert`, `sparse+dense` (our `dense+sparse`) = (w_d·dense + w_s·sparse)/(w_d + w_s) and
        `colbert+sparse+dense` (our `all`) = (w_d·dense + w_s·sparse + w_c·colbert)/(w_d + w_s + w_c), with
        `weights_for_different_modes = [w_dense, w_sparse, w_colbert]` (default [1, 1, 1], FlagEmbedding's).
        """
        single = (
            isinstance(sentence_pairs, tuple)
            and len(sentence_pairs) == 2
            and isinstance(sentence_pairs[0], str)
        )
        pairs = [sentence_pairs] if single else list(sentence_pairs)
        for i, pair in enumerate(pairs):
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise ValueError(f"sentence_pairs[{i}] must be a (query, passage) pair, got {pair!r:.80}")
        w = (
            [1.0, 1.0, 1.0]
            if weights_for_different_modes is None
            else [float(x) for x in weights_for_different_modes]
        )
        if len(w) != 3:
            raise ValueError(
                f"weights_for_different_modes must have 3 values [dense, sparse, colbert], got {w}"
            )
        everything = {
            "return_dense": True,
            "return_sparse": True,
            "return_colbert_vecs": True,
            "batch_size": batch_size,
        }
        q = self.encode(
            [p[0] for p in pairs], max_length=max_query_length or self.query_max_length, **everything
        )
        p = self.encode(
            [p[1] for p in pairs], max_length=max_passage_length or self.passage_max_length, **everything
        )
        dense = np.einsum("nd,nd->n", q["dense_vecs"], p["dense_vecs"]).astype(np.float64)
        sparse = np.array(
            [
                scoring.lexical_score(a, b)
                for a, b in zip(q["lexical_weights"], p["lexical_weights"], strict=True)
            ]
        )
        colbert = np.array(
            [scoring.colbert_score(a, b) for a, b in zip(q["colbert_vecs"], p["colbert_vecs"], strict=True)]
        )
        by_mode: dict[Mode, np.ndarray] = {
            "colbert": colbert,
            "sparse": sparse,
            "dense": dense,
            "dense+sparse": (w[0] * dense + w[1] * sparse) / (w[0] + w[1]),
            "all": scoring.hybrid_scores(dense, sparse, colbert, w) / sum(w),
        }
        scores = {key: by_mode[mode] for mode, key in FLAG_SCORE_KEYS.items()}
        if single:
            return {k: float(v[0]) for k, v in scores.items()}
        return {k: v.tolist() for k, v in scores.items()}

    def compute_lexical_matching_score(self, lexical_weights_1, lexical_weights_2):
        """FlagEmbedding-compatible: one score for two dicts, a matrix for two lists."""
        if isinstance(lexical_weights_1, dict) and isinstance(lexical_weights_2, dict):
            return scoring.lexical_score(lexical_weights_1, lexical_weights_2)
        return scoring.lexical_scores(list(lexical_weights_1), list(lexical_weights_2))

    def colbert_score(self, q_reps: np.ndarray, p_reps: np.ndarray) -> float:
        """FlagEmbedding-compatible ColBERT score of one query's and one passage's vectors."""
        return scoring.colbert_score(np.asarray(q_reps), np.asarray(p_reps))

    def convert_id_to_token(self, lexical_weights: dict | list[dict]) -> dict | list[dict]:
        """Lexical weights keyed by token text instead of id (one dict in, one dict out)."""
        single = isinstance(lexical_weights, dict)
        items = [lexical_weights] if single else lexical_weights
        out = [{self.tokenizer.decode([int(t)]): w for t, w in d.items()} for d in items]
        return out[0] if single else out


def _choose_backend(model: str | M3Model, backend: str | None) -> str:
    """`torch` or `onnx`: as asked (checked against what `model` is), else `onnx` exactly for an export dir."""
    if backend not in (None, "torch", "onnx"):
        raise ValueError(f"backend must be 'torch' or 'onnx', got {backend!r}")
    onnx_dir = not isinstance(model, M3Model) and is_onnx_export(model)
    if backend == "onnx" and not onnx_dir:
        what = (
            "an M3Model in memory" if isinstance(model, M3Model) else f"{model}: not an ONNX export directory"
        )
        raise ValueError(f"backend='onnx' needs an `m3 export-onnx` directory; got {what}")
    if backend == "torch" and onnx_dir:
        raise ValueError(
            f"{model}: is an ONNX export (no torch weights); load it with backend='onnx', or load the model "
            "it was exported from with backend='torch'"
        )
    return backend or ("onnx" if onnx_dir else "torch")


def _check_fixed_at_export(cfg: M3Config, where, normalize: bool | None, pooling: str | None) -> None:
    """The ONNX graph pools and normalizes as exported: asking for otherwise is an error, not a silent no-op."""
    if normalize is not None and normalize != cfg.normalize_dense:
        raise ValueError(
            f"{where}: the ONNX graph was exported with normalize_dense={cfg.normalize_dense}; "
            f"normalize_embeddings={normalize} needs a new export"
        )
    if pooling is not None and pooling != cfg.pooling:
        raise ValueError(
            f"{where}: the ONNX graph was exported with pooling={cfg.pooling!r}; "
            f"pooling_method={pooling!r} needs a new export"
        )
