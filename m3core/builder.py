"""Small M3 models from scratch: a tokenizer trained on given texts + a random-init XLM-RoBERTa-shaped encoder.

Used by the tests (tiny, built once per session, no hub) and by the embedded default. The tokenizer is a
SentencePiece-style Unigram model (XLM-R's kind) trained with `tokenizers`, with XLM-R's special tokens in XLM-R's
order (`<s>`=0, `<pad>`=1, `</s>`=2, `<unk>`=3), so the model behaves like a miniature BGE-M3.
"""

from __future__ import annotations

import json
import logging
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast, XLMRobertaConfig, XLMRobertaModel

from m3core.config import M3Config
from m3core.model import M3Model

logger = logging.getLogger(__name__)

SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


def xlmr_tokenizer(source: Tokenizer | str | Path, model_max_length: int) -> PreTrainedTokenizerFast:
    """`source` (a `tokenizers.Tokenizer`, or the path of a `tokenizer.json`) as a transformers fast tokenizer
    with XLM-R's special tokens. Used here and by the e5 backbone builder (`m3core.backbones.e5`)."""
    where = {"tokenizer_object": source} if isinstance(source, Tokenizer) else {"tokenizer_file": str(source)}
    return PreTrainedTokenizerFast(
        **where,
        bos_token="<s>",
        eos_token="</s>",
        cls_token="<s>",
        sep_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        mask_token="<mask>",
        model_max_length=model_max_length,
    )


@dataclass
class TinyModelSpec:
    """Shape of a model built from scratch (defaults: ~1M parameters, fast on a laptop CPU)."""

    vocab_size: int = 2000
    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 128
    max_tokens: int = 512
    colbert_dim: int | None = None
    # Wider than BERT's 0.02: in a 2-layer random model the CLS state barely depends on the text at 0.02, and
    # CLS-pooled dense retrieval then needs far more steps than a test or the embedded default can afford.
    initializer_range: float = 0.1
    seed: int = 0


def train_tokenizer(
    texts: Iterable[str], vocab_size: int = 2000, max_tokens: int = 512
) -> PreTrainedTokenizerFast:
    """A Unigram tokenizer trained on `texts`, wrapped as a transformers fast tokenizer with XLM-R's specials.

    At most half the vocabulary goes to single characters: text of many scripts (gettext catalogs of every
    language) has more distinct characters than a small vocabulary holds, and `tokenizers`' Unigram trainer,
    unlike its BPE one (`limit_alphabet`), then fails ("The vocabulary is not large enough to contain all
    chars"). The rarest characters are left out of training instead; they encode as `<unk>`.
    """
    texts = [unicodedata.normalize("NFKC", t) for t in texts]  # the normalizer below: count what it will see
    counts = Counter(ch for t in texts for ch in t)
    max_alphabet = vocab_size // 2
    if len(counts) > max_alphabet:
        rare = [ch for ch, _ in counts.most_common()[max_alphabet:]]
        logger.info(
            "tokenizer: %d distinct characters for a vocabulary of %d; the %d rarest (%d occurrences) become <unk>",
            len(counts), vocab_size, len(rare), sum(counts[ch] for ch in rare),
        )  # fmt: skip
        table = str.maketrans(dict.fromkeys(rare, " "))
        texts = [t.translate(table) for t in texts]
    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, unk_token="<unk>", show_progress=False
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok.model = canonical_unigram(tok.model)
    bos, eos = tok.token_to_id("<s>"), tok.token_to_id("</s>")
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A </s>", pair="<s> $A </s> </s> $B </s>", special_tokens=[("<s>", bos), ("</s>", eos)]
    )
    return xlmr_tokenizer(tok, max_tokens)


def canonical_unigram(model: models.Unigram) -> models.Unigram:
    """`model` with its pieces in one fixed order: the `SPECIAL_TOKENS` first, then by score rounded to 1e-3, then by
    text; the sorted scores are handed out in that order. `tokenizers`' Unigram trainer returns the same pieces in
    a run-dependent order (hash-map iteration): near-ties swap, and the characters it must keep get scores
    -1e-4 apart in whatever order it met them. Two builds from the same texts then gave different token ids and
    the "same" seeded model differed run to run (the e2e test's before/after figures moved by 0.05)."""
    vocab = json.loads(Tokenizer(model).to_str())["model"]["vocab"]
    n_special = len(SPECIAL_TOKENS)
    specials, rest = [tuple(v) for v in vocab[:n_special]], vocab[n_special:]
    pieces = [p for p, _ in sorted(rest, key=lambda ps: (-round(ps[1], 3), ps[0]))]
    scores = sorted((round(s, 9) for _, s in rest), reverse=True)  # the last bits vary run to run too
    canonical = specials + list(zip(pieces, scores, strict=True))
    return models.Unigram(canonical, unk_id=SPECIAL_TOKENS.index("<unk>"), byte_fallback=False)


class ScratchShape(BaseModel):
    """The shape of the small model a run builds from scratch (backbone `scratch`: tests, pipeline checks); the
    rest of the `TinyModelSpec` follows from it (heads of 32 dims, FFN 4× hidden, 512 positions)."""

    model_config = ConfigDict(extra="forbid")

    hidden_size: int = Field(128, ge=8)
    num_layers: int = Field(2, ge=1)
    vocab_size: int = Field(8000, ge=100, description="tokenizer vocabulary trained on warehouse text")

    def spec(self) -> TinyModelSpec:
        return TinyModelSpec(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            num_layers=self.num_layers,
            num_heads=max(1, self.hidden_size // 32),
            intermediate_size=4 * self.hidden_size,
            max_tokens=512,
        )


def build_tiny_model(
    out_dir: str | Path | None,
    texts: Iterable[str],
    spec: TinyModelSpec | None = None,
    config: M3Config | None = None,
    **overrides,
) -> Path | M3Model:
    """Build a random-init M3 model whose tokenizer is trained on `texts`; save it to `out_dir`.

    `overrides` set `TinyModelSpec` fields (e.g. `hidden_size=32`). Returns the directory, or the in-memory
    `M3Model` when `out_dir` is None.
    """
    spec = spec or TinyModelSpec(**overrides)
    tokenizer = train_tokenizer(texts, spec.vocab_size, spec.max_tokens)
    if tokenizer.convert_tokens_to_ids("<pad>") != 1:
        raise RuntimeError("tokenizer special tokens are not in XLM-R order")
    torch.manual_seed(spec.seed)
    backbone = XLMRobertaModel(
        XLMRobertaConfig(
            vocab_size=len(tokenizer),
            hidden_size=spec.hidden_size,
            num_hidden_layers=spec.num_layers,
            num_attention_heads=spec.num_heads,
            intermediate_size=spec.intermediate_size,
            max_position_embeddings=spec.max_tokens + 2,  # XLM-R reserves padding_idx + 1 = 2 rows
            type_vocab_size=1,
            initializer_range=spec.initializer_range,
            pad_token_id=1,
            bos_token_id=0,
            eos_token_id=2,
        ),
        add_pooling_layer=False,
    )
    cfg = config or M3Config(colbert_dim=spec.colbert_dim, passage_max_length=spec.max_tokens)
    model = M3Model(backbone, tokenizer, cfg)
    if out_dir is None:
        return model
    path = model.save_pretrained(out_dir)
    logger.info(
        "built a %d-parameter model with a %d-token vocabulary in %s",
        sum(p.numel() for p in model.parameters()),
        len(tokenizer),
        path,
    )
    return path
