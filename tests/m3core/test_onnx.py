"""ONNX export and backend: `m3 export-onnx` output encodes like the torch model (conformance), int8, the CLI.

One export of the session's tiny model (with --int8) serves the module; a second one (positions extended past the
traced and the original length) tests long inputs and --overwrite.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from m3core import M3Config, M3Embedder, M3Model, cli
from m3core.onnx_runtime import FILES, is_onnx_export
from tests.support import textgen

TOL = 1e-4
# One batch of mixed lengths (padding) and scripts; the long one is ~200 tokens.
TEXTS = [
    "river mountain engine",
    textgen.long_text(200, seed=5),
    "Fluss Berg Motor und Kaffee mit Garten",
    "река гора",
    "河流 山脉 引擎 咖啡",
    "نهر جبل محرك قهوة حديقة كمان شتاء",
    "le port et la planète avec le noyau " * 4,
]
ALL = {"return_dense": True, "return_sparse": True, "return_colbert_vecs": True}


@pytest.fixture(scope="module")
def onnx_dir(tiny_model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "tiny-onnx"
    assert cli.main(["-q", "export-onnx", str(tiny_model_dir), str(out), "--int8"]) == 0
    return out


@pytest.fixture(scope="module")
def torch_emb(tiny_model_dir):
    return M3Embedder(str(tiny_model_dir), batch_size=16, show_progress=False)


@pytest.fixture(scope="module")
def onnx_emb(onnx_dir):
    return M3Embedder(str(onnx_dir), batch_size=16, show_progress=False, threads=2)


def assert_same(a: dict, b: dict, tol: float = TOL) -> None:
    """Two `encode` results agree: dense, lexical weights (same keys, close values) and ColBERT vectors."""
    if a["dense_vecs"] is not None:
        assert b["dense_vecs"].dtype == np.float32 and a["dense_vecs"].shape == b["dense_vecs"].shape
        assert np.abs(a["dense_vecs"] - b["dense_vecs"]).max() <= tol
    if a["lexical_weights"] is not None:
        assert len(a["lexical_weights"]) == len(b["lexical_weights"])
        for x, y in zip(a["lexical_weights"], b["lexical_weights"], strict=True):
            assert x.keys() == y.keys() and len(x) > 0
            assert max(abs(x[k] - y[k]) for k in x) <= tol
    if a["colbert_vecs"] is not None:
        for x, y in zip(a["colbert_vecs"], b["colbert_vecs"], strict=True):
            assert x.shape == y.shape and np.abs(x - y).max() <= tol


def test_export_directory_describes_itself(onnx_dir, tiny_model_dir):
    assert sorted(p.name for p in onnx_dir.iterdir()) == sorted(
        ["m3_config.json", FILES["fp32"], FILES["int8"], "tokenizer.json", "tokenizer_config.json"]
    )
    assert is_onnx_export(onnx_dir) and not is_onnx_export(tiny_model_dir)
    cfg = M3Config.load(onnx_dir)
    manifest = cfg.extra["onnx"]
    assert manifest["format"] == "m3-onnx" and manifest["files"] == FILES
    assert manifest["max_tokens"] == 512 and manifest["hidden_size"] == 64 and manifest["trained_heads"]
    assert max(manifest["check_max_abs_diff"].values()) <= TOL
    # everything else is the model's own config (pooling, prompts, lengths…)
    saved = json.loads((tiny_model_dir / "m3_config.json").read_text())
    assert {
        k: v for k, v in json.loads((onnx_dir / "m3_config.json").read_text()).items() if k != "extra"
    } == {k: v for k, v in saved.items() if k != "extra"}


def test_auto_detection_and_backend_errors(onnx_dir, onnx_emb, torch_emb, tiny_model_dir):
    assert onnx_emb.backend == "onnx" and onnx_emb.model is None
    assert torch_emb.backend == "torch" and isinstance(torch_emb.model, M3Model)
    assert onnx_emb.runner.session.get_session_options().intra_op_num_threads == 2
    with pytest.raises(ValueError, match="is an ONNX export"):
        M3Embedder(str(onnx_dir), backend="torch")
    with pytest.raises(ValueError, match="not an ONNX export directory"):
        M3Embedder(str(tiny_model_dir), backend="onnx")
    with pytest.raises(ValueError, match="exported with pooling='cls'"):
        M3Embedder(str(onnx_dir), pooling_method="mean")
    with pytest.raises(ValueError, match="runs on CPU"):
        M3Embedder(str(onnx_dir), device="cuda")


def test_fp32_matches_torch_on_mixed_lengths_and_scripts(onnx_emb, torch_emb):
    for batch_size in (16, 3):  # one padded batch; several length-sorted ones
        assert_same(
            torch_emb.encode(TEXTS, batch_size=batch_size, **ALL),
            onnx_emb.encode(TEXTS, batch_size=batch_size, **ALL),
        )
    dense_only = {"return_dense": True, "return_sparse": False, "return_colbert_vecs": False}
    a, b = torch_emb.encode(TEXTS, **dense_only), onnx_emb.encode(TEXTS, **dense_only)
    assert b["lexical_weights"] is None and b["colbert_vecs"] is None
    assert_same(a, b)


def test_single_empty_prompts_and_scores_match_torch(onnx_emb, torch_emb):
    one = onnx_emb.encode("river mountain", **ALL)
    assert one["dense_vecs"].shape == (64,) and isinstance(one["lexical_weights"], dict)
    assert one["colbert_vecs"].ndim == 2
    empty = onnx_emb.encode([], **ALL)
    assert empty["dense_vecs"].shape == (0, 64) and empty["lexical_weights"] == [] == empty["colbert_vecs"]
    for emb in (onnx_emb, torch_emb):
        emb.query_instruction_for_retrieval, emb.passage_instruction_for_retrieval = "query: ", "passage: "
    try:
        assert_same(torch_emb.encode_queries(TEXTS[:3], **ALL), onnx_emb.encode_queries(TEXTS[:3], **ALL))
        assert_same(torch_emb.encode_corpus(TEXTS[3:], **ALL), onnx_emb.encode_corpus(TEXTS[3:], **ALL))
    finally:
        for emb in (onnx_emb, torch_emb):
            emb.query_instruction_for_retrieval = emb.passage_instruction_for_retrieval = None
    pairs = list(zip(TEXTS[:3], TEXTS[3:6], strict=True))
    want, got = torch_emb.compute_score(pairs), onnx_emb.compute_score(pairs)
    assert want.keys() == got.keys()
    for key in want:
        assert np.allclose(want[key], got[key], atol=TOL), key


def test_mcls_matches_torch(onnx_emb, torch_emb):
    for emb in (onnx_emb, torch_emb):
        emb.config.mcls_stride = 16
    try:
        texts = [textgen.long_text(60, seed=1), "river mountain", textgen.long_text(120, seed=2)]
        multi = onnx_emb.encode(texts, mcls=True, **ALL)
        assert_same(torch_emb.encode(texts, mcls=True, **ALL), multi)
        plain = onnx_emb.encode(texts, **ALL)
        assert not np.allclose(multi["dense_vecs"][0], plain["dense_vecs"][0], atol=1e-3)  # MCLS did apply
        assert multi["colbert_vecs"][0].shape == plain["colbert_vecs"][0].shape  # no vector for inserted CLS
    finally:
        for emb in (onnx_emb, torch_emb):
            emb.config.mcls_stride = 256


def test_length_limit_is_one_clear_error(onnx_emb, torch_emb, onnx_dir):
    text = textgen.long_text(700, seed=4)
    assert_same(
        torch_emb.encode([text], max_length=512, **ALL), onnx_emb.encode([text], max_length=512, **ALL)
    )
    with pytest.raises(ValueError, match=r"max_length=600 exceeds the 512 positions of the ONNX export"):
        onnx_emb.encode([text], max_length=600)


def test_int8_is_close_to_fp32(onnx_dir, onnx_emb):
    int8 = M3Embedder(str(onnx_dir), onnx_variant="int8", batch_size=16, show_progress=False)
    a, b = onnx_emb.encode(TEXTS, **ALL), int8.encode(TEXTS, **ALL)
    cos = (a["dense_vecs"] * b["dense_vecs"]).sum(1)
    assert cos.min() >= 0.98, cos  # measured here: >= 0.9999
    assert M3Config.load(onnx_dir).extra["onnx"]["int8_fp32_matmuls"] == {}  # random weights: no outliers
    for x, y in zip(a["colbert_vecs"], b["colbert_vecs"], strict=True):
        assert x.shape == y.shape and (x * y).sum(1).min() >= 0.95


def test_cli_refuses_a_non_empty_out_dir(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    for extra in ([], ["--overwrite"]):  # --overwrite replaces an export only, never other files
        assert cli.main(["export-onnx", str(tiny_model_dir), str(out), *extra]) == cli.USER_ERROR
        err = capsys.readouterr().err.strip()
        assert err.startswith("m3 export-onnx: error: ") and str(out) in err and "\n" not in err
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and (out / "notes.txt").read_text() == "keep me"
    assert [p.name for p in tmp_path.iterdir()] == ["mine"]  # no half-built sibling left behind


def test_overwrite_and_inputs_longer_than_traced_and_original(tiny_model_dir, onnx_dir, tmp_path):
    long_model = M3Model.from_pretrained(tiny_model_dir)
    long_model.extend_positions(1024)
    long_dir = long_model.save_pretrained(tmp_path / "long")
    out = tmp_path / "export"
    shutil.copytree(onnx_dir, out)
    assert cli.main(["-q", "export-onnx", str(long_dir), str(out), "--overwrite"]) == 0
    assert not (out / FILES["int8"]).exists()  # the previous export was replaced, not merged
    emb = M3Embedder(str(out), show_progress=False)
    assert emb.runner.max_tokens == 1024
    with pytest.raises(ValueError, match="has no 'int8' graph"):
        M3Embedder(str(out), onnx_variant="int8")
    texts = [textgen.long_text(900, seed=6), "river mountain"]
    want = M3Embedder(str(long_dir), show_progress=False).encode(texts, max_length=1024, **ALL)
    assert want["colbert_vecs"][0].shape[0] > 600
    assert_same(want, emb.encode(texts, max_length=1024, **ALL))


def test_m3_eval_on_the_export_reports_the_torch_models_numbers(onnx_dir, tiny_model_dir, tmp_path, capsys):
    """`m3 eval` takes the export directory as its `--model` (the backend is detected): same figures as torch."""
    sets = textgen.write_toy_eval_sets(tmp_path / "sets", ("en", "zh"), n_topics=24, seed=3)
    reports = {}
    for name, model in (("torch", tiny_model_dir), ("onnx", onnx_dir)):
        out = tmp_path / name
        argv = [
            "-q",
            "eval",
            "--model",
            str(model),
            "--eval-set",
            str(sets),
            "--modes",
            "dense,sparse,colbert,all",
        ]
        assert cli.main([*argv, "--out", str(out)]) == 0
        reports[name] = json.loads((out / "report.json").read_text())["average"]
    assert reports["onnx"].keys() == reports["torch"].keys() and "all" in reports["onnx"]
    for mode, metrics in reports["torch"].items():
        assert reports["onnx"][mode] == pytest.approx(metrics, abs=1e-6), mode


def test_m3_eval_onnx_variant(onnx_dir, tiny_model_dir, tmp_path, capsys):
    """`--onnx-variant int8` evaluates the int8 graph; asked of a torch model it is one clear error (exit 2)."""
    sets = textgen.write_toy_eval_sets(tmp_path / "sets", ("en",), n_topics=16, seed=4)
    argv = ["-q", "eval", "--eval-set", str(sets), "--modes", "dense", "--onnx-variant", "int8"]
    assert cli.main([*argv, "--model", str(onnx_dir), "--out", str(tmp_path / "int8")]) == 0
    assert json.loads((tmp_path / "int8" / "report.json").read_text())["average"]["dense"]["ndcg@10"] > 0
    capsys.readouterr()
    assert cli.main([*argv, "--model", str(tiny_model_dir), "--out", str(tmp_path / "torch")]) == 2
    assert "needs an `m3 export-onnx` directory" in capsys.readouterr().err


def test_the_exports_hybrid_weights_are_the_models(tiny_model_dir, tmp_path):
    """The profile's hybrid weights (chosen on a dev split) travel with the export and are the ones used."""
    from m3core.retrieval.hybrid import model_weights

    model = shutil.copytree(tiny_model_dir, tmp_path / "model")
    cfg = M3Config.load(model)
    cfg.hybrid_weights = [0.25, 0.5, 1.0]
    cfg.save(model)
    assert cli.main(["-q", "export-onnx", str(model), str(tmp_path / "onnx")]) == 0
    onnx = M3Embedder(str(tmp_path / "onnx"), show_progress=False)
    assert tuple(model_weights(onnx)) == tuple(model_weights(M3Embedder(str(model)))) == (0.25, 0.5, 1.0)


def test_int8_keeps_a_matmul_with_outlier_inputs_in_fp32(tiny_model_dir, tmp_path):
    """A feed-forward input with a massive activation (one token, one channel: what real encoders have) stays
    fp32 in the int8 graph, and the manifest says which and why; the other MatMuls are quantized."""
    import onnx
    import torch

    from m3core.onnx_export import CALIBRATION_TEXTS, OUTLIER_RATIO

    model = M3Model.from_pretrained(tiny_model_dir)
    layer = model.backbone.encoder.layer[0]
    seen = []  # the layer-norm output the feed-forward reads, over the calibration tokens
    hook = layer.attention.output.LayerNorm.register_forward_hook(lambda m, i, o: seen.append(o[0, :, 0]))
    with torch.no_grad():
        for text in CALIBRATION_TEXTS:
            model.backbone(**model.tokenizer(text, return_tensors="pt", truncation=True, max_length=512))
    hook.remove()
    top2 = torch.cat(seen).topk(2).values
    # Channel 0 of the feed-forward fires on the one token with the largest hidden value 0, and nowhere else.
    with torch.no_grad():
        dense = layer.intermediate.dense
        dense.weight[0].zero_()
        dense.weight[0, 0] = 1e4
        dense.bias[0] = -1e4 * float(top2.mean())
    outlier_dir = model.save_pretrained(tmp_path / "outlier")
    out = tmp_path / "onnx"
    assert cli.main(["-q", "export-onnx", str(outlier_dir), str(out), "--int8"]) == 0

    kept = M3Config.load(out).extra["onnx"]["int8_fp32_matmuls"]
    assert len(kept) == 1 and next(iter(kept.values())) >= OUTLIER_RATIO, kept
    int8 = onnx.load(str(out / FILES["int8"]), load_external_data=False)
    fp32_matmuls = {n.name for n in int8.graph.node if n.op_type == "MatMul"}
    assert fp32_matmuls == set(kept)  # the one kept, and only it: the rest are quantized
    assert sum(n.op_type in ("DynamicQuantizeMatMul", "MatMulInteger") for n in int8.graph.node) > 4
    fp32 = onnx.load(str(out / FILES["fp32"]), load_external_data=False)
    kept_node = next(n for n in fp32.graph.node if n.name in kept)
    assert kept_node.input[0].startswith("gelu")  # it is the feed-forward's down projection, which reads it


def test_the_exporters_info_lines_stay_out_of_the_log(tiny_model_dir, tmp_path, caplog):
    """onnx_ir logs one INFO line per folded initializer (120 in one `make run`); a flow's log keeps ours only."""
    import logging

    from m3core.onnx_export import export_onnx

    caplog.set_level(logging.INFO)
    chatty = [logging.getLogger(name) for name in ("onnx_ir", "onnxscript")]
    before = [log.level for log in chatty]  # whatever the process had set
    for log in chatty:
        log.setLevel(logging.NOTSET)  # as in a flow's process: INFO would reach the log
    try:
        export_onnx(tiny_model_dir, tmp_path / "onnx")
        names = {r.name.split(".")[0] for r in caplog.records}
        assert "m3core" in names and not names & {"onnx_ir", "onnxscript"}, names
        assert [log.level for log in chatty] == [logging.NOTSET] * 2  # restored after the export
    finally:
        for log, level in zip(chatty, before, strict=True):
            log.setLevel(level)
