"""M3Model / M3Embedder: heads, special tokens, checkpoints, long inputs, MCLS, batching, bad inputs."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from m3core import M3Config, M3Embedder, M3Model, scoring
from m3core.heads import special_token_ids
from tests.support import textgen

TEXTS = [
    "river mountain engine",
    "Fluss Berg Motor und Kaffee mit Garten",
    "река гора",
    "河流 山脉 引擎 咖啡",
    "نهر جبل محرك قهوة حديقة كمان شتاء",
    "le port et la planète avec le noyau",
]


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    return M3Model.from_pretrained(tiny_model_dir).eval()


def _batch(model, texts):
    enc = model.tokenizer(texts, padding=True, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


def test_head_shapes_and_special_tokens(model):
    ids, mask = _batch(model, TEXTS)
    with torch.inference_mode():
        out = model(ids, mask)
    b, length = ids.shape
    hidden = model.backbone.config.hidden_size
    assert out.dense.shape == (b, hidden)
    assert torch.allclose(out.dense.norm(dim=-1), torch.ones(b), atol=1e-5)
    assert out.sparse.shape == (b, length)
    assert out.colbert.shape == (b, length - 1, model.colbert_head.dim)
    # padding and CLS/EOS/PAD/UNK get no lexical weight; every weight is >= 0
    specials = torch.tensor(special_token_ids(model.tokenizer))
    assert set(specials.tolist()) == {0, 1, 2, 3}  # <s>, <pad>, </s>, <unk> in XLM-R order
    assert (out.sparse[torch.isin(ids, specials)] == 0).all()
    assert (out.sparse >= 0).all()
    # ColBERT: one vector per real token except CLS (EOS included), unit norm; zero on padding
    assert torch.equal(out.colbert_mask, mask[:, 1:].bool())
    norms = out.colbert.norm(dim=-1)
    assert torch.allclose(norms[out.colbert_mask], torch.ones(int(out.colbert_mask.sum())), atol=1e-5)
    assert (norms[~out.colbert_mask] == 0).all()


def test_mean_pooling_and_unnormalized(tiny_model_dir):
    m = M3Model.from_pretrained(tiny_model_dir, config=M3Config(pooling="mean", normalize_dense=False)).eval()
    ids, mask = _batch(m, TEXTS[:2])
    with torch.inference_mode():
        hidden = m.backbone(input_ids=ids, attention_mask=mask).last_hidden_state
        out = m(ids, mask)
    w = mask.unsqueeze(-1).float()
    assert torch.allclose(out.dense, (hidden * w).sum(1) / w.sum(1), atol=1e-6)


def test_encode_outputs_match_forward_and_scoring(tiny_embedder):
    out = tiny_embedder.encode(TEXTS, return_dense=True, return_sparse=True, return_colbert_vecs=True)
    assert out["dense_vecs"].shape == (len(TEXTS), 64) and out["dense_vecs"].dtype == np.float32
    for i, text in enumerate(TEXTS):
        ids = tiny_embedder.tokenizer(text)["input_ids"]
        assert out["colbert_vecs"][i].shape == (len(ids) - 1, 64)
        lw = out["lexical_weights"][i]
        assert all(w > 0 for w in lw.values())
        assert set(lw) <= {str(t) for t in ids if t not in (0, 1, 2, 3)}
    # repeated token keeps its max weight: compare with the per-token weights from the forward pass
    m = tiny_embedder.model
    ids = torch.tensor([tiny_embedder.tokenizer(TEXTS[4])["input_ids"]])
    with torch.inference_mode():
        w = m(ids, torch.ones_like(ids)).sparse[0]
    expected: dict[str, float] = {}
    for t, x in zip(ids[0].tolist(), w.tolist(), strict=True):
        if x > 0:
            expected[str(t)] = max(expected.get(str(t), 0.0), x)
    assert out["lexical_weights"][4] == pytest.approx(expected, abs=1e-6)
    # matrix forms equal the pairwise forms
    lex = scoring.lexical_scores(out["lexical_weights"], out["lexical_weights"])
    col = scoring.colbert_scores(out["colbert_vecs"], out["colbert_vecs"])
    for i in range(len(TEXTS)):
        for j in range(len(TEXTS)):
            assert lex[i, j] == pytest.approx(
                scoring.lexical_score(out["lexical_weights"][i], out["lexical_weights"][j])
            )
            assert col[i, j] == pytest.approx(
                scoring.colbert_score(out["colbert_vecs"][i], out["colbert_vecs"][j])
            )


def test_torch_batch_scores_equal_inference_scores(tiny_embedder):
    """The differentiable training-time score matrices agree with the dict/array forms."""
    m, tok = tiny_embedder.model, tiny_embedder.tokenizer
    enc = tok(TEXTS, padding=True, return_tensors="pt")
    with torch.inference_mode():
        o = m(enc["input_ids"], enc["attention_mask"])
    out = tiny_embedder.encode(TEXTS, return_sparse=True, return_colbert_vecs=True)
    sparse = scoring.sparse_score_matrix(o.sparse, o.input_ids, o.sparse, o.input_ids).numpy()
    assert np.allclose(
        sparse, scoring.lexical_scores(out["lexical_weights"], out["lexical_weights"]), atol=1e-5
    )
    colbert = scoring.colbert_score_matrix(o.colbert, o.colbert_mask, o.colbert, o.colbert_mask).numpy()
    assert np.allclose(colbert, scoring.colbert_scores(out["colbert_vecs"], out["colbert_vecs"]), atol=1e-5)
    dense = scoring.dense_score_matrix(o.dense, o.dense).numpy()
    assert np.allclose(dense, scoring.dense_scores(out["dense_vecs"], out["dense_vecs"]), atol=1e-5)


def test_compute_score_keys_and_weights(tiny_embedder):
    pairs = [(TEXTS[0], TEXTS[1]), (TEXTS[2], TEXTS[3])]
    s = tiny_embedder.compute_score(pairs, weights_for_different_modes=[0.4, 0.2, 0.4])
    # FlagEmbedding's keys, in its order (`m3core.modes.FLAG_SCORE_KEYS` translates them to our modes).
    assert list(s) == ["colbert", "sparse", "dense", "sparse+dense", "colbert+sparse+dense"]
    for i in range(2):
        assert s["sparse+dense"][i] == pytest.approx((0.4 * s["dense"][i] + 0.2 * s["sparse"][i]) / 0.6)
        assert s["colbert+sparse+dense"][i] == pytest.approx(
            0.4 * s["dense"][i] + 0.2 * s["sparse"][i] + 0.4 * s["colbert"][i]
        )
    one = tiny_embedder.compute_score(pairs[0])
    assert isinstance(one["dense"], float)


def test_batching_restores_input_order(tiny_model_dir):
    texts = [textgen.long_text(n, seed=n) for n in (3, 40, 7, 90, 1, 25, 60, 12, 5, 33)]
    small = M3Embedder(str(tiny_model_dir), batch_size=3, max_batch_tokens=64, show_progress=False)
    full = small.encode(texts, return_sparse=True, return_colbert_vecs=True)
    for i, text in enumerate(texts):  # each text alone: no batching effects at all
        one = small.encode([text], return_sparse=True, return_colbert_vecs=True)
        assert np.allclose(full["dense_vecs"][i], one["dense_vecs"][0], atol=1e-5)
        assert full["lexical_weights"][i] == pytest.approx(one["lexical_weights"][0], abs=1e-5)
        assert np.allclose(full["colbert_vecs"][i], one["colbert_vecs"][0], atol=1e-5)


def test_save_load_round_trip_is_bit_exact(model, tmp_path):
    model.config.query_max_length = 64  # a non-default value must survive
    out_dir = model.save_pretrained(tmp_path / "saved")
    for name in (
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "colbert_linear.pt",
        "sparse_linear.pt",
        "m3_config.json",
    ):
        assert (out_dir / name).is_file(), name
    assert (
        json.loads((out_dir / "tokenizer_config.json").read_text())["tokenizer_class"]
        == "PreTrainedTokenizerFast"
    )
    again = M3Model.from_pretrained(out_dir).eval()
    assert again.config == model.config
    for (k1, v1), (k2, v2) in zip(model.state_dict().items(), again.state_dict().items(), strict=True):
        assert k1 == k2 and torch.equal(v1, v2), k1
    ids, mask = _batch(model, TEXTS)
    assert again.tokenizer(TEXTS)["input_ids"] == model.tokenizer(TEXTS)["input_ids"]
    with torch.inference_mode():
        a, b = model(ids, mask), again(ids, mask)
    assert (
        torch.equal(a.dense, b.dense)
        and torch.equal(a.sparse, b.sparse)
        and torch.equal(a.colbert, b.colbert)
    )
    model.config.query_max_length = 512


def test_flagembedding_layout_without_m3_config_loads(model, tmp_path):
    """A BAAI/bge-m3-style directory (no m3_config.json) loads with BGE-M3 defaults and the saved heads."""
    out_dir = model.save_pretrained(tmp_path / "flag")
    (out_dir / "m3_config.json").unlink()
    loaded = M3Model.from_pretrained(out_dir)
    assert loaded.config.pooling == "cls" and loaded.config.normalize_dense
    assert torch.equal(loaded.colbert_head.linear.weight, model.colbert_head.linear.weight)
    assert torch.equal(loaded.sparse_head.linear.weight, model.sparse_head.linear.weight)


def test_plain_backbone_gets_fresh_heads(model, tmp_path, caplog):
    d = tmp_path / "backbone"
    model.backbone.save_pretrained(d)
    model.tokenizer.save_pretrained(d)
    with caplog.at_level("WARNING"):
        m = M3Model.from_pretrained(d, config=M3Config(colbert_dim=16))
    assert "freshly initialized" in caplog.text
    assert m.colbert_head.dim == 16


def test_heads_are_loaded_without_pickle_code(model, tmp_path):
    out_dir = model.save_pretrained(tmp_path / "evil")
    torch.save(
        {"weight": torch.zeros(1, 64), "bias": torch.zeros(1), "payload": _Evil()},
        out_dir / "sparse_linear.pt",
    )
    with pytest.raises(ValueError, match=r"sparse_linear\.pt: not a loadable head file \((?i:weights.only)"):
        M3Model.from_pretrained(out_dir)


def test_one_missing_or_bad_head_file_is_an_error_naming_it(model, tmp_path, caplog):
    out_dir = model.save_pretrained(tmp_path / "partial")
    (out_dir / "sparse_linear.pt").unlink()
    with pytest.raises(
        ValueError, match=r"partial/sparse_linear\.pt: missing, while colbert_linear\.pt is there"
    ):
        M3Model.from_pretrained(out_dir)
    with caplog.at_level("WARNING"):  # asked for explicitly: both heads afresh
        fresh = M3Model.from_pretrained(out_dir, fresh_heads=True)
    assert "fresh heads asked for" in caplog.text
    assert not torch.equal(fresh.colbert_head.linear.weight, model.colbert_head.linear.weight)

    torch.save(model.sparse_head.linear.state_dict(), out_dir / "sparse_linear.pt")
    data = (out_dir / "colbert_linear.pt").read_bytes()
    (out_dir / "colbert_linear.pt").write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(ValueError, match=r"colbert_linear\.pt: not a loadable head file"):
        M3Model.from_pretrained(out_dir)
    torch.save({"weight": torch.zeros(3, 5), "bias": torch.zeros(3)}, out_dir / "colbert_linear.pt")
    with pytest.raises(ValueError, match=r"colbert_linear\.pt: does not fit this model's head"):
        M3Model.from_pretrained(out_dir, config=M3Config(colbert_dim=model.colbert_head.dim))


class _Evil:
    pass


def test_bad_inputs_are_rejected_with_their_index(tiny_embedder):
    with pytest.raises(ValueError, match=r"sentences\[1\] is an empty string"):
        tiny_embedder.encode(["ok", "  "])
    with pytest.raises(ValueError, match=r"sentences\[2\] is int"):
        tiny_embedder.encode(["ok", "fine", 3])
    with pytest.raises(ValueError, match=r"queries\[0\] is NoneType"):
        tiny_embedder.encode_queries([None])
    with pytest.raises(ValueError, match="nothing to encode"):
        tiny_embedder.encode(["ok"], return_dense=False)
    empty = tiny_embedder.encode([], return_sparse=True, return_colbert_vecs=True)  # no texts: empty outputs
    assert empty["dense_vecs"].shape == (0, tiny_embedder.encode(["ok"])["dense_vecs"].shape[1])
    assert empty["lexical_weights"] == [] and empty["colbert_vecs"] == []
    with pytest.raises(ValueError, match=r"sentence_pairs\[0\]"):
        tiny_embedder.compute_score([("only one",)])
    with pytest.raises(ValueError, match="weights_for_different_modes"):
        tiny_embedder.compute_score([("a", "b")], weights_for_different_modes=[1, 1])


def test_too_long_max_length_says_how_to_extend(tiny_embedder):
    with pytest.raises(ValueError, match="extend-positions"):
        tiny_embedder.encode(["ok"], max_length=4096)


@pytest.mark.parametrize("method", ["copy", "interpolate"])
def test_position_extension_is_saved_and_used(tiny_model_dir, tmp_path, method):
    m = M3Model.from_pretrained(tiny_model_dir)
    old = m.backbone.embeddings.position_embeddings.weight.detach().clone()  # [514, H]
    m.extend_positions(1500, method=method)
    new = m.backbone.embeddings.position_embeddings.weight
    assert new.shape == (1502, old.shape[1]) and m.max_tokens == 1500
    assert torch.equal(new[:514], old) if method == "copy" else torch.equal(new[:2], old[:2])
    if method == "copy":
        assert torch.equal(new[2 + 512 + 5], old[2 + 5])  # tiled
    else:
        assert torch.allclose(new[-1], old[-1]) and torch.allclose(new[2], old[2])
    saved = m.save_pretrained(tmp_path / f"long-{method}")
    emb = M3Embedder(str(saved), show_progress=False)
    assert emb.model.max_tokens == 1500
    assert emb.model.config.position_extension == {"method": method, "from_tokens": 512, "to_tokens": 1500}
    text = textgen.long_text(1400, seed=3)
    out = emb.encode([text], max_length=1500, return_colbert_vecs=True)
    n_tokens = len(emb.tokenizer(text, truncation=True, max_length=1500)["input_ids"])
    assert n_tokens > 512 and out["colbert_vecs"][0].shape[0] == n_tokens - 1


def test_attention_dropout_is_set_on_the_attention_layers_only(tiny_model_dir, tmp_path):
    m = M3Model.from_pretrained(tiny_model_dir).train()
    for module in m.backbone.modules():  # the other dropouts off: what is left random is attention dropout
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    ids, mask = _batch(m, TEXTS)

    def two_forwards():
        torch.manual_seed(0)
        first = m(ids, mask, sparse=False, colbert=False).dense
        return first, m(ids, mask, sparse=False, colbert=False).dense

    assert m.set_attention_dropout(0.5) == m.backbone.config.num_hidden_layers
    a, b = two_forwards()
    assert not torch.allclose(a, b)  # attention dropout at work
    m.set_attention_dropout(0.0)
    a, b = two_forwards()
    assert torch.equal(a, b)
    before = json.loads((tiny_model_dir / "config.json").read_text())["attention_probs_dropout_prob"]
    saved = json.loads((m.save_pretrained(tmp_path / "saved") / "config.json").read_text())
    assert saved["attention_probs_dropout_prob"] == before > 0  # the run's choice is not the model's
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        m.set_attention_dropout(1.0)
    m.backbone = torch.nn.Linear(2, 2)  # a backbone of another layout
    with pytest.raises(ValueError, match="no self-attention dropout found in Linear"):
        m.set_attention_dropout(0.0)


def test_mcls_dense_is_mean_of_cls_states(tiny_model_dir):
    emb = M3Embedder(str(tiny_model_dir), show_progress=False)
    emb.model.config.mcls_stride = 16
    text = textgen.long_text(60, seed=1)
    plain = emb.encode([text], return_colbert_vecs=True)
    multi = emb.encode([text], mcls=True, return_colbert_vecs=True)
    ids = emb.tokenizer(text)["input_ids"]
    from m3core.mcls import insert_cls

    new_ids, positions = insert_cls(ids, emb.tokenizer.cls_token_id, 16, emb.model.max_tokens)
    assert len(positions) == -(-(len(ids) - 2) // 16) and len(positions) > 2
    t = torch.tensor([new_ids])
    with torch.inference_mode():
        hidden = emb.model.backbone(input_ids=t, attention_mask=torch.ones_like(t)).last_hidden_state[0]
    expected = torch.nn.functional.normalize(hidden[positions].mean(0), dim=-1).numpy()
    assert np.allclose(multi["dense_vecs"][0], expected, atol=1e-5)
    assert not np.allclose(multi["dense_vecs"][0], plain["dense_vecs"][0], atol=1e-3)
    # inserted CLS tokens get no ColBERT vector: as many vectors as without MCLS
    assert multi["colbert_vecs"][0].shape == plain["colbert_vecs"][0].shape


def test_convert_id_to_token(tiny_embedder):
    lw = tiny_embedder.encode("river mountain", return_sparse=True, return_dense=False)["lexical_weights"]
    tokens = tiny_embedder.convert_id_to_token(lw)
    assert len(tokens) == len(lw) > 0
    assert sorted(tokens.values()) == sorted(lw.values())
    for token in tokens:  # each decoded piece is a piece of the text
        assert token.strip() and token.strip() in "river mountain", token
    assert tiny_embedder.convert_id_to_token([lw, lw]) == [tokens, tokens]


def test_model_dir_errors(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        M3Model.from_pretrained(f)
    with pytest.raises(ValueError, match="not a local directory"):
        M3Model.from_pretrained("no-such-org/no-such-model-m3-test")
    bad = tmp_path / "cfg"
    bad.mkdir()
    (bad / "m3_config.json").write_text(json.dumps({"pooling": "max"}))
    with pytest.raises(ValueError, match="pooling"):
        M3Config.load(bad)
    shutil.rmtree(bad)


def test_a_model_built_twice_from_the_same_texts_is_the_same(tmp_path):
    # tokenizers' Unigram trainer orders tied pieces differently each run; build_tiny_model canonicalizes them,
    # so the same texts and seed give the same token ids and weights (the e2e figures were flaky before).
    from m3core import build_tiny_model

    texts = textgen.sentences(300)
    dirs = [build_tiny_model(tmp_path / f"m{i}", texts, vocab_size=400) for i in range(3)]
    for name in ("tokenizer.json", "model.safetensors", "sparse_linear.pt", "colbert_linear.pt"):
        first = (dirs[0] / name).read_bytes()
        assert all((d / name).read_bytes() == first for d in dirs[1:]), name


def test_mcls_keeps_the_models_pooling_for_texts_within_one_stride(tiny_model_dir):
    """MCLS changes only texts longer than one stride: a short text (a query) keeps the model's pooling — for a
    mean-pooled model too, whose lone CLS state is not the vector it was trained to produce."""
    emb = M3Embedder(str(tiny_model_dir), show_progress=False)
    emb.model.config.mcls_stride = 16
    emb.model.config.pooling = "mean"
    short, long = "river mountain", textgen.long_text(60, seed=1)
    plain = emb.encode([short, long])["dense_vecs"]
    multi = emb.encode([short, long], mcls=True)["dense_vecs"]
    assert np.allclose(multi[0], plain[0], atol=1e-6)  # one CLS: mean pooling as without MCLS
    assert not np.allclose(multi[1], plain[1], atol=1e-3)  # several: the mean of the CLS states
