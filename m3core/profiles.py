"""Profiles of known backbone families: how a model of the family must be used (pooling, prompts).

A directory we save carries its profile in `m3_config.json`. A directory without one (a Hub snapshot, a plain
Hugging Face export) gets its family's profile on first load, recognised from the name it was loaded by or the
`_name_or_path` its `config.json` records; anything unrecognised gets BGE-M3's defaults (CLS pooling, no
prompts), so a `BAAI/bge-m3` directory behaves exactly as FlagEmbedding loads it.

    >>> family_of("intfloat/multilingual-e5-small")
    'e5'
    >>> family_of("/models/BAAI--bge-m3")
    'bge-m3'
    >>> family_of("my-encoder") is None
    True
"""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path
from typing import Any

# family -> M3Config fields. e5 was trained with "query: " / "passage: " prefixes and mean pooling (its model
# card); BGE-M3 with CLS pooling and no instruction (FlagEmbedding's BGEM3FlagModel).
PROFILES: dict[str, dict[str, Any]] = {
    "e5": {"pooling": "mean", "query_instruction": "query: ", "passage_instruction": "passage: "},
    "bge-m3": {"pooling": "cls", "query_instruction": None, "passage_instruction": None},
}
_PATTERNS = [
    ("e5", re.compile(r"(^|[/_\-.])(multilingual-)?e5(-|$)", re.I)),
    ("bge-m3", re.compile(r"bge-m3", re.I)),
]


def family_of(name: str) -> str | None:
    """The known family a model name or path belongs to, or None."""
    for family, pattern in _PATTERNS:
        if pattern.search(Path(str(name)).name) or pattern.search(str(name)):
            return family
    return None


def detect_family(name_or_path: str, directory: Path) -> str | None:
    """The family of a model loaded as `name_or_path` from `directory` (its name, else config.json's record)."""
    names = [str(name_or_path), directory.name]
    config = directory / "config.json"
    if config.is_file():
        with contextlib.suppress(OSError, ValueError):  # an unreadable config.json is AutoModel's to report
            names.append(str(json.loads(config.read_text()).get("_name_or_path") or ""))
    for name in names:
        family = family_of(name) if name else None
        if family:
            return family
    return None
