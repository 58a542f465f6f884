"""gettext catalogs (`.mo` / `.po`): English msgid → translated msgstr, one pair per message.

This is how public parallel corpora of software localization are built. The language comes from the
catalog's locale directory (`<locale>/LC_MESSAGES/<domain>.mo`), else from its `Language` header.
Contexts go into the location; plural forms give one pair per form the catalog has (singular →
msgstr[0], plural → msgstr[1]). UI artifacts (accelerators, markup) are cleaned; fuzzy, obsolete,
untranslated, same-language and placeholder-only messages are rejected with that reason.
"""

from __future__ import annotations

import glob
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from m3core.data.clean import clean_ui_string, strip_placeholders
from m3core.data.langid import base_lang, normalize_lang
from m3core.data.records import Pair, Record, Rejected, content_hash

DEFAULT_GLOBS = ("/usr/share/locale/*/LC_MESSAGES/*.mo", "/usr/share/locale-langpack/*/LC_MESSAGES/*.mo")


def catalog_language(path: Path, metadata: dict[str, str]) -> str | None:
    """The catalog's language: the locale directory above LC_MESSAGES, else the `Language` header."""
    if path.parent.name == "LC_MESSAGES":
        return normalize_lang(path.parent.parent.name)
    lang = metadata.get("Language", "").strip()
    return normalize_lang(lang) if lang else None


@dataclass
class GettextSource:
    """Catalog files found by glob patterns (or given directly)."""

    patterns: tuple[str, ...] = DEFAULT_GLOBS
    name: str = "gettext"
    source_lang: str = "en"  # the msgid language of nearly all free-software catalogs
    max_catalogs_per_language: int | None = None  # a stable sample (by hash of the domain) per language

    def units(self) -> list[Path]:
        files: list[Path] = []
        for pat in self.patterns:
            p = Path(pat)
            files.extend([p] if p.is_file() else sorted(Path(f) for f in glob.glob(pat, recursive=True)))
        if self.max_catalogs_per_language:
            by_lang: dict[str, list[Path]] = {}
            for f in sorted(files, key=lambda f: content_hash(f.name)):
                by_lang.setdefault(f.parent.parent.name if f.parent.name == "LC_MESSAGES" else "", []).append(
                    f
                )
            files = sorted(f for fs in by_lang.values() for f in fs[: self.max_catalogs_per_language])
        return files

    def read(self, unit: Path) -> Iterator[Record]:
        import polib

        path = Path(unit)
        try:
            cat = polib.mofile(str(path)) if path.suffix == ".mo" else polib.pofile(str(path))
        except (OSError, ValueError, UnicodeDecodeError) as err:
            yield Rejected(self.name, str(path), "unreadable-catalog", f"{type(err).__name__}: {err}")
            return
        lang = catalog_language(path, cat.metadata)
        if lang is None:
            yield Rejected(self.name, str(path), "no-language", "no locale directory and no Language header")
            return
        same = base_lang(lang) == base_lang(self.source_lang)
        for entry in cat:
            if not entry.msgid:
                continue  # the header entry: catalog metadata, not a message
            ctx = f" msgctxt={entry.msgctxt!r}" if entry.msgctxt else ""
            loc = f"{path}{ctx} msgid={entry.msgid!r}"
            if entry.msgid_plural:
                forms = [
                    (entry.msgid if i == 0 else entry.msgid_plural, entry.msgstr_plural.get(i, ""), f"[{i}]")
                    for i in sorted(entry.msgstr_plural)
                ] or [(entry.msgid, "", "[0]")]
            else:
                forms = [(entry.msgid, entry.msgstr, "")]
            for src, dst, suffix in forms:
                where = loc + suffix
                if entry.obsolete:
                    yield Rejected(self.name, where, "obsolete", lang=lang, content=dst[:500])
                elif "fuzzy" in entry.flags:
                    yield Rejected(self.name, where, "fuzzy", lang=lang, content=dst[:500])
                elif not dst:
                    yield Rejected(self.name, where, "untranslated", "empty msgstr", lang, src[:500])
                elif same:
                    yield Rejected(
                        self.name, where, "same-language", f"catalog language {lang}", lang, dst[:500]
                    )
                else:
                    query, positive = clean_ui_string(src), clean_ui_string(dst)
                    if query and strip_placeholders(query) == strip_placeholders(positive):
                        yield Rejected(
                            self.name, where, "untranslated", "msgstr equals msgid", lang, dst[:500]
                        )
                        continue
                    # Group by the English text: its translations in all languages share one split.
                    group = "msg:" + content_hash(query.casefold())
                    yield Pair(
                        "translation", query, positive, lang, self.source_lang, self.name, where, group
                    )
