"""The `m3` front door: the library's commands plus those the app layers contribute by entry point."""

from __future__ import annotations

import subprocess
import sys

import pytest

from m3core import cli


def m3(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "m3core.cli", *args], capture_output=True, text=True, timeout=120, **kwargs
    )


def test_app_layers_contribute_their_commands_by_entry_point():
    modules = cli.command_modules()
    # The library's own table names only library modules; the rest come from the installed entry points.
    assert all(m.startswith("m3core.commands.") for m in cli.COMMANDS.values())
    assert modules["synth"] == "synth.commands.synth" and modules["llm"] == "synth.commands.llm"
    assert modules["retrain"] == "flows.commands.retrain"
    out = m3("--help")
    assert out.returncode == 0
    for name in ("encode", "train", "synth", "llm", "retrain"):
        assert f"    {name} " in out.stdout, out.stdout


def test_torchrun_entry_is_the_train_command():
    out = subprocess.run(
        [sys.executable, "-m", "m3core.train", "--help"], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0 and "--config" in out.stdout and "--nproc" in out.stdout


def test_unknown_reporter_names_the_installed_ones():
    from m3core.train import TrainConfig

    with pytest.raises(ValueError, match=r"report_to: unknown \['wandb'\].*mlflow"):
        TrainConfig(model="m", output_dir="o", train_data=["t"], report_to=["wandb"])
    assert TrainConfig(model="m", output_dir="o", train_data=["t"], report_to=["mlflow"]).report_to == [
        "mlflow"
    ]


def test_export_run_on_an_empty_warehouse_is_one_clear_line(tmp_path):
    from m3core.data.warehouse import Warehouse

    path = tmp_path / "wh.duckdb"
    Warehouse(path).close()
    out = m3("export", "run", str(tmp_path / "out"), "--warehouse", str(path))
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1] == (
        f"m3 export: error: {path}: the warehouse gave no evaluation set for languages any: mine more man pages"
    )
    assert "Traceback" not in out.stderr and not (tmp_path / "out" / "train").exists()


def test_long_exports_need_the_model_and_check_their_spec(tmp_path):
    from m3core.data.warehouse import Warehouse

    path = tmp_path / "wh.duckdb"
    Warehouse(path).close()
    out = m3("export", "long-eval", str(tmp_path / "out"), "--warehouse", str(path))
    assert out.returncode == 2 and out.stderr.strip().splitlines()[-1] == (
        "m3 export: error: m3 export long-eval needs --model: the model whose tokenizer counts the tokens"
    )
    out = m3(
        "export",
        "long-train",
        str(tmp_path / "t.jsonl"),
        "--warehouse",
        str(path),
        "--model",
        "m",
        "--min-tokens",
        "100",
    )
    assert out.returncode == 2 and "min_tokens=100 must exceed deep_from=512" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr


def test_http_request_logs_stay_below_info_unless_asked():
    import logging

    try:
        cli.configure_logging(verbose=0)
        assert logging.getLogger("httpx").getEffectiveLevel() == logging.WARNING
        assert logging.getLogger("openai").getEffectiveLevel() == logging.WARNING
        assert logging.getLogger("httpx2").getEffectiveLevel() == logging.WARNING
        cli.configure_logging(verbose=2)
        assert logging.getLogger("httpx").getEffectiveLevel() == logging.DEBUG
    finally:
        for name in cli.QUIET_LOGGERS:
            logging.getLogger(name).setLevel(logging.NOTSET)


def test_expected_errors_are_one_line_exit_2_and_traceback_only_with_v(tmp_path):
    notdb = tmp_path / "notes.duckdb"
    notdb.write_text("not a database\n")
    out = m3("export", "eval", str(tmp_path / "out"), "--warehouse", str(notdb))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert (
        out.stderr.strip()
        .splitlines()[-1]
        .startswith(f"m3 export: error: warehouse {notdb}: not a DuckDB database file (")
    )
    missing = m3("eval", "--model", str(tmp_path / "nope"), "--eval-set", str(tmp_path / "no-sets"))
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1, missing.stderr
    assert str(tmp_path / "no-sets") in missing.stderr or str(tmp_path / "nope") in missing.stderr
    verbose = m3("-v", "export", "eval", str(tmp_path / "out"), "--warehouse", str(notdb))
    assert verbose.returncode == 2 and "Traceback" in verbose.stderr
