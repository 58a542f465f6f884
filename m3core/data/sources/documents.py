"""Directories of plain-text documents (`.txt`, `.md`): one long document per file.

The language is declared per source or taken from the first directory level below the root when it is a
language tag (`root/de/guide.txt`); otherwise it is detected. The title is the first non-empty line.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from m3core.data.langid import normalize_lang
from m3core.data.records import Document, Record, Rejected

_LANG_DIR = re.compile(r"^[a-z]{2,3}(?:[-_][A-Za-z]{2,4})?(?:@\w+)?$")  # de, pt_BR, sr@latin, zh-Hant


@dataclass
class DocumentDirSource:
    """Every `*.txt` / `*.md` file under `root`."""

    root: Path
    name: str = "documents"
    lang: str | None = None
    suffixes: tuple[str, ...] = (".txt", ".md")
    lang_from_dir: bool = True

    def units(self) -> list[list[Path]]:
        root = Path(self.root)
        if not root.is_dir():
            raise FileNotFoundError(f"source {self.name}: no directory {root}")
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in self.suffixes)
        return [files[i : i + 200] for i in range(0, len(files), 200)]

    def _lang(self, path: Path) -> str:
        if self.lang:
            return normalize_lang(self.lang)
        rel = path.relative_to(self.root).parts
        if self.lang_from_dir and len(rel) > 1 and _LANG_DIR.match(rel[0]):
            return normalize_lang(rel[0])
        return "und"

    def read(self, unit: list[Path]) -> Iterator[Record]:
        for path in unit:
            lang = self._lang(path)
            try:
                text = path.read_bytes().decode("utf-8")
            except UnicodeDecodeError as err:
                yield Rejected(self.name, f"{path}:byte{err.start}", "invalid-utf8", str(err), lang)
                continue
            title = next((ln.strip().lstrip("# ") for ln in text.splitlines() if ln.strip()), "")
            key = f"doc:{path.relative_to(self.root).with_suffix('')}"
            yield Document(title, text, lang, self.name, str(path), group_key=key)
