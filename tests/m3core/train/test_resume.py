"""Killed mid-run (SIGKILL) and resumed, training ends with the same weights as an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from m3core.train import TrainConfig
from tests.support import textgen


def launch(config_path, *extra):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "m3core.train", "--config", str(config_path), *extra],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def make_config(tmp_path, tiny_model_dir, name):
    data = tmp_path / "train.jsonl"
    if not data.exists():
        textgen.write_training_jsonl(data, textgen.retrieval_pairs(24, seed=5))
    cfg = textgen.tiny_train_config(
        tiny_model_dir,
        tmp_path / name,
        data,
        learning_rate=1e-3,
        max_steps=14,
        save_steps=3,
        self_distill_start_step=4,
    )
    path = tmp_path / f"{name}.yaml"
    cfg.save(path)
    return path, tmp_path / name


def weights(out_dir):
    state = load_file(str(out_dir / "model.safetensors"))
    for head in ("colbert_linear.pt", "sparse_linear.pt"):
        for k, v in torch.load(out_dir / head, weights_only=True).items():
            state[f"{head}/{k}"] = v
    return state


@pytest.mark.faults
def test_killed_and_resumed_run_matches_uninterrupted(tmp_path, tiny_model_dir):
    full_cfg, full_out = make_config(tmp_path, tiny_model_dir, "full")
    run = launch(full_cfg)
    assert run.wait(timeout=600) == 0, run.stderr.read()[-3000:]

    cut_cfg, cut_out = make_config(tmp_path, tiny_model_dir, "cut")
    run = launch(cut_cfg)
    deadline = time.time() + 600
    while not any((p / "trainer_state.json").exists() for p in cut_out.glob("checkpoint-*")):
        assert run.poll() is None, "the run ended before its first checkpoint"
        assert time.time() < deadline
        time.sleep(0.02)
    run.send_signal(signal.SIGKILL)
    run.wait(timeout=60)
    assert not (cut_out / "train_summary.json").exists(), "killed too late: the run had already finished"
    killed_at = max(int(p.name.split("-")[1]) for p in cut_out.glob("checkpoint-*"))
    assert killed_at < 14

    run = launch(cut_cfg, "--resume")
    assert run.wait(timeout=600) == 0, run.stderr.read()[-3000:]
    summary = json.loads((cut_out / "train_summary.json").read_text())
    assert summary["steps"] == 14

    a, b = weights(full_out), weights(cut_out)
    assert a.keys() == b.keys()
    moved = False
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-5, atol=1e-6, msg=k)
        moved |= not torch.equal(a[k], load_file(str(tiny_model_dir / "model.safetensors")).get(k, a[k]))
    assert moved  # training changed the weights: the comparison is not of two untouched copies
    # the resumed run logged the steps after the checkpoint, not from zero
    steps = [json.loads(x)["step"] for x in (cut_out / "train_log.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 14 and killed_at + 1 in steps


def test_resume_rejects_a_different_seed(tmp_path, tiny_model_dir):
    from m3core.train.trainer import Trainer

    cfg_path, _ = make_config(tmp_path, tiny_model_dir, "s")
    cfg = TrainConfig.load(cfg_path)
    cfg.max_steps, cfg.save_steps = 4, 3
    Trainer(cfg).train()
    other = cfg.model_copy(update={"seed": 7})
    with pytest.raises(ValueError, match="seed"):
        Trainer(other).train(resume_from="latest")


def train_cli(config_path, *extra):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "m3core.cli", "-q", "train", "--config", str(config_path), *extra]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def test_one_run_per_output_dir(tmp_path, tiny_model_dir):
    cfg_path, out = make_config(tmp_path, tiny_model_dir, "once")
    cfg = TrainConfig.load(cfg_path)
    cfg.max_steps, cfg.save_steps = 4, 2
    cfg.save(cfg_path)

    none_yet = train_cli(cfg_path, "--resume")
    assert none_yet.returncode == 2
    assert none_yet.stderr.strip().splitlines()[-1] == (
        f"m3 train: error: --resume: no complete checkpoint under {out} (nothing to resume)"
    )
    assert train_cli(cfg_path).returncode == 0
    first = (out / "train_log.jsonl").read_text()

    again = train_cli(cfg_path)
    assert again.returncode == 2
    assert f"output_dir {out} is not empty (" in again.stderr and "--overwrite to replace it" in again.stderr
    assert (out / "train_log.jsonl").read_text() == first  # nothing of the first run touched

    replaced = train_cli(cfg_path, "--overwrite")
    assert replaced.returncode == 0, replaced.stderr[-2000:]
    steps = [json.loads(x)["step"] for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)), "the replaced run's log must not be appended to"


def test_overwrite_never_empties_a_directory_that_holds_no_run(tmp_path):
    from m3core.train.output_dir import prepare

    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "thesis.tex").write_text("precious")
    with pytest.raises(ValueError, match="holds none"):
        prepare(notes, overwrite=True)
    assert (notes / "thesis.tex").read_text() == "precious"
    with pytest.raises(ValueError, match="contradict"):
        prepare(notes, resume="latest", overwrite=True)


def test_resume_with_other_data_names_it_and_force_goes_on(tmp_path, tiny_model_dir, caplog):
    from m3core.train.trainer import Trainer

    cfg_path, out = make_config(tmp_path, tiny_model_dir, "data")
    cfg = TrainConfig.load(cfg_path)
    cfg.max_steps, cfg.save_steps = 4, 3
    Trainer(cfg).train()
    data = tmp_path / "train.jsonl"
    data.write_text(data.read_text().replace("\n", "\n", 1) + data.read_text().splitlines()[0] + "\n")
    with pytest.raises(ValueError, match=r"training data: fingerprint \w+ -> \w+ \(--force"):
        Trainer(cfg).train(resume_from="latest")
    # A torn last log line (a run killed while writing it) is dropped with a warning naming the file.
    log = out / "train_log.jsonl"
    log.write_text(log.read_text() + '{"step": 9, "lo')
    with caplog.at_level("WARNING"):
        summary = Trainer(cfg).train(resume_from="latest", force=True)
    assert summary["steps"] == 4
    assert "--force: resuming anyway" in caplog.text
    assert f"{log}:" in caplog.text and "torn last line" in caplog.text
