"""A training run's output directory: one run per directory, resumed only as itself.

- A fresh run needs an empty (or missing) `output_dir`; one holding another run's files is refused unless
  `overwrite` (then that run's files are removed first — only a directory that looks like a training output, so
  a mistyped path to something else is never emptied).
- `resume="latest"` with no complete checkpoint is an error, not a silent fresh start.
- Resuming checks the checkpoint's config and training-data fingerprint against this run's; what changed is
  named, and going on anyway needs `force`.
- A torn last line of `train_log.jsonl` (a run killed mid-write) is dropped with a warning naming the file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"
LOG_FILE = "train_log.jsonl"
# Files a launcher may put into the directory before the run starts (torchrun's config for its ranks).
LAUNCH_FILES = {"launch_config.yaml"}
# What marks a directory as a training output (the only kind `overwrite` empties).
RUN_MARKERS = ("train_config.yaml", LOG_FILE, "train_summary.json")
# Config keys a resumed run may change freely: bookkeeping, not what is learned.
BOOKKEEPING = {"logging_steps", "save_steps", "save_total_limit", "report_to", "show_progress", "max_steps"}


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete `checkpoint-N` under `output_dir` (writes are atomic renames)."""
    found = [p for p in Path(output_dir).glob("checkpoint-*") if (p / STATE_FILE).is_file()]
    return max(found, key=lambda p: int(p.name.split("-")[1]), default=None)


def resume_checkpoint(output_dir: str | Path, resume: str | Path) -> Path:
    """The checkpoint `resume` names ("latest": the newest under `output_dir`); an error if it is not there."""
    checkpoint = latest_checkpoint(output_dir) if str(resume) == "latest" else Path(resume)
    if checkpoint is None:
        raise ValueError(f"--resume: no complete checkpoint under {output_dir} (nothing to resume)")
    if not (checkpoint / STATE_FILE).is_file():
        raise ValueError(f"--resume {checkpoint}: not a complete checkpoint (no {STATE_FILE})")
    return checkpoint


def prepare(output_dir: str | Path, resume: str | Path | None = None, overwrite: bool = False) -> Path | None:
    """Check (and for `overwrite`, empty) `output_dir` before a run; returns the checkpoint to resume, or None."""
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output_dir {out}: exists and is not a directory")
    if resume:
        if overwrite:
            raise ValueError("--resume and --overwrite contradict each other: resume a run, or replace it")
        return resume_checkpoint(out, resume)
    leftovers = sorted(p.name for p in out.iterdir() if p.name not in LAUNCH_FILES) if out.is_dir() else []
    if not leftovers:
        return None
    if not overwrite:
        shown = ", ".join(leftovers[:5]) + (", …" if len(leftovers) > 5 else "")
        raise ValueError(
            f"output_dir {out} is not empty ({shown}): --resume to continue that run, --overwrite to replace it, "
            "or choose another directory"
        )
    if not any((out / m).exists() for m in RUN_MARKERS) and not latest_checkpoint(out):
        raise ValueError(
            f"output_dir {out}: --overwrite replaces a previous training run, and this directory holds none "
            f"({', '.join(leftovers[:5])}); choose an empty directory"
        )
    for name in leftovers:
        path = out / name
        shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    logger.warning("output_dir %s: removed the previous run's files (--overwrite)", out)
    return None


def data_fingerprint(files: list[Path]) -> str:
    """Content digest of the training files (names and bytes): a resumed run must read the same data."""
    h = hashlib.sha256()
    for f in sorted(files):
        h.update(f.name.encode())
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()[:20]


def check_resume(checkpoint: Path, config: dict[str, Any], fingerprint: str, force: bool = False) -> None:
    """Refuse to resume `checkpoint` with another config or other data (unless `force`), naming what changed."""
    import yaml

    changes = []
    saved_path = checkpoint / "train_config.yaml"
    if saved_path.is_file():
        saved = yaml.safe_load(saved_path.read_text()) or {}
        for key in sorted(set(saved) | set(config)):
            if key not in BOOKKEEPING and saved.get(key) != config.get(key):
                changes.append(f"{key}: {saved.get(key)!r} -> {config.get(key)!r}")
    state = json.loads((checkpoint / STATE_FILE).read_text())
    if state.get("data_fingerprint") not in (None, fingerprint):
        changes.append(f"training data: fingerprint {state['data_fingerprint']} -> {fingerprint}")
    if not changes:
        return
    message = f"resume {checkpoint}: this run differs from the one that wrote it: " + "; ".join(changes)
    if not force:
        raise ValueError(message + " (--force to resume anyway)")
    logger.warning("%s (--force: resuming anyway)", message)


def trim_log(output_dir: Path, step: int) -> None:
    """Keep the log lines up to `step` (what the resumed run had logged); drop a torn last line with a warning."""
    log = output_dir / LOG_FILE
    if not log.is_file():
        return
    lines = log.read_text(encoding="utf-8").splitlines()
    kept = []
    for n, line in enumerate(lines, 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            if n == len(lines):
                logger.warning(
                    "%s:%d: dropped a torn last line (the run was killed while writing it)", log, n
                )
                continue
            raise ValueError(f"{log}:{n}: not a JSON line") from None
        if record.get("step", 0) <= step:
            kept.append(line)
    log.write_text("".join(x + "\n" for x in kept), encoding="utf-8")
