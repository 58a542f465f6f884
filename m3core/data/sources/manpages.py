"""Man pages: roff rendered to plain text, one long document per page and language, plus pairs.

Rendering uses `mandoc -T utf8` when installed (a single C binary, ~6 ms a page here) and falls back to
`groff -man -Tutf8` (~40 ms a page: a process pipeline per page). Each page gives
- a `Document` (the whole rendered page) for synthetic query generation and evaluation corpora;
- a `title-body` pair: the NAME line's summary (query) → the DESCRIPTION section (passage), in the page's
  language — query→passage-shaped data, which measurably helps retrieval where UI strings did not.
Cross-lingual pairs (a translated summary → the English description of the same page) are derived in
the warehouse once both languages are in (`m3core.data.pipeline.derive_crosslingual_pairs`).
Symlinked and `.so` alias pages are rejected as `alias` (their target is mined under its own name).
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from m3core.data.langid import normalize_lang
from m3core.data.records import Document, Pair, Record, Rejected, content_hash

DEFAULT_ROOT = Path("/usr/share/man")
_SECTION_DIR = re.compile(r"^man[0-9n][a-z]*$")
_OVERSTRIKE = re.compile(r".\x08")
_PAGE_NAME = re.compile(r"^(?P<name>.+)\.(?P<section>[0-9n][\w]*?)(?:\.(?:gz|bz2|xz|Z))?$")
_DASH = re.compile(r"\s+(?:\\-|-|–|—|－)\s+")
# DESCRIPTION in the languages Debian's translated man pages use (measured on the rendered headings).
DESCRIPTION_HEADINGS = {
    "description",
    "beschreibung",
    "descripción",
    "описание",
    "説明",
    "解説",
    "描述",
    "說明",
    "说明",
    "opis",
    "descrizione",
    "descrição",
    "beschrijving",
    "omschrijving",
    "beskrivning",
    "опис",
    "açiklama",
    "mô tả",
    "popis",
    "beskrivelse",
    "kuvaus",
    "leírás",
    "deskripsi",
    "penjelasan",
    "설명",
    "descriere",
    "περιγραφη",
    "περιγραφή",
    "descripció",
    "kirjeldus",
    "apraksts",
    "aprašymas",
}


@dataclass(frozen=True)
class ManPage:
    path: Path
    lang: str
    name: str
    section: str


@dataclass
class RenderedPage:
    header: str
    sections: list[tuple[str, str]]  # (heading, body) in page order


def page_key(name: str, section: str) -> str:
    """The split/group key shared by a page's translations: `man:ls.1`."""
    return f"man:{name}.{section}"


def render(path: Path, width: int = 100) -> str:
    """The page as plain UTF-8 text (overstrike bold/underline removed)."""
    if shutil.which("mandoc"):
        cmd = ["mandoc", "-T", "utf8", "-O", f"width={width}", str(path)]
        proc = subprocess.run(cmd, capture_output=True, cwd=path.parent.parent, timeout=60, check=False)
    else:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        cmd = ["groff", "-man", "-Tutf8", "-t", "-P-cbu", f"-rLL={width}n"]
        env = dict(os.environ, MANWIDTH=str(width))
        proc = subprocess.run(
            cmd, input=data, capture_output=True, cwd=path.parent.parent, timeout=60, check=False, env=env
        )
    out = proc.stdout.decode("utf-8", "replace")
    if proc.returncode not in (0, 1, 2, 3) or not out.strip():  # mandoc: 1-3 are warnings/errors it survived
        raise RuntimeError(f"{cmd[0]} exit {proc.returncode}: {proc.stderr.decode('utf-8', 'replace')[:300]}")
    return _OVERSTRIKE.sub("", out)


def split_sections(text: str) -> RenderedPage:
    """Headings are the unindented lines between the page header (first line) and footer (last line)."""
    lines = text.rstrip("\n").split("\n")
    header = lines[0].strip() if lines else ""
    body = lines[1:-1] if len(lines) > 2 else []
    sections: list[tuple[str, list[str]]] = []
    for line in body:
        if line and not line[0].isspace():
            sections.append((line.strip(), []))
        elif sections:
            sections[-1][1].append(line)
    out = []
    for heading, blines in sections:
        indent = min((len(ln) - len(ln.lstrip()) for ln in blines if ln.strip()), default=0)
        out.append((heading, "\n".join(ln[indent:].rstrip() for ln in blines).strip("\n")))
    return RenderedPage(header, out)


def _unwrap(text: str) -> str:
    """Re-join hard-wrapped lines into paragraphs (rendered output wraps at the page width)."""
    paras = re.split(r"\n\s*\n", text)
    return "\n\n".join(" ".join(ln.strip() for ln in p.split("\n") if ln.strip()) for p in paras if p.strip())


def description_of(page: RenderedPage) -> str | None:
    """The DESCRIPTION section (by its heading in any known language), else the longest later section."""
    later = page.sections[1:]
    for heading, body in later:
        if heading.casefold().strip(" :") in DESCRIPTION_HEADINGS and body.strip():
            return body
    candidates = [body for _, body in later if body.strip()]
    return max(candidates, key=len) if candidates else None


def truncate_paragraphs(text: str, max_chars: int) -> str:
    """At most `max_chars`, cut at a paragraph (else sentence, else word) boundary."""
    if len(text) <= max_chars:
        return text
    cut = text[:max_chars]
    for sep in ("\n\n", ". ", "。", " "):
        i = cut.rfind(sep)
        if i > max_chars // 2:
            return cut[: i + (1 if sep in (". ", "。") else 0)].rstrip()
    return cut


@dataclass
class ManPageSource:
    """Man pages under `root` (`manN/` = English, `<locale>/manN/` = translations).

    english: "translated" keeps only English pages that have a translation here (what cross-lingual
    pairs and eval sets need); "all" renders every English page; "none" skips English.
    """

    root: Path = DEFAULT_ROOT
    name: str = "manpages"
    langs: tuple[str, ...] | None = None  # normalized tags to keep (None: all)
    english: str = "translated"
    max_per_language: int | None = None
    max_passage_chars: int = 2_000
    chunk: int = 64

    def pages(self) -> list[ManPage]:
        """Every page file, with its language, name and section (sorted, deterministic)."""
        root = Path(self.root)
        if not root.is_dir():
            raise FileNotFoundError(f"source {self.name}: no man page directory {root}")
        found: list[ManPage] = []
        for top in sorted(root.iterdir()):
            if _SECTION_DIR.match(top.name):
                lang, section_dirs = "en", [top]
            elif top.is_dir():
                lang = normalize_lang(top.name)
                section_dirs = sorted(d for d in top.iterdir() if d.is_dir() and _SECTION_DIR.match(d.name))
            else:
                continue
            for sdir in section_dirs:
                for f in sorted(sdir.iterdir()):
                    m = _PAGE_NAME.match(f.name)
                    if m and (f.is_file() or f.is_symlink()):
                        found.append(ManPage(f, lang, m["name"], m["section"]))
        return found

    def units(self) -> list[list[ManPage]]:
        pages = self.pages()
        if self.langs is not None:
            keep = set(self.langs) | ({"en"} if self.english != "none" else set())
            pages = [p for p in pages if p.lang in keep]
        translated = {(p.name, p.section) for p in pages if p.lang != "en"}
        if self.english == "translated":
            pages = [p for p in pages if p.lang != "en" or (p.name, p.section) in translated]
        elif self.english == "none":
            pages = [p for p in pages if p.lang != "en"]
        if self.max_per_language:
            # The same pages in every language where possible: the most translated pages first (so English
            # keeps the originals of what the other languages keep, which cross-lingual pairs and eval sets
            # need), then a stable pseudo-random order.
            languages_of: dict[tuple[str, str], int] = {}
            for p in pages:
                languages_of[(p.name, p.section)] = languages_of.get((p.name, p.section), 0) + 1
            by_lang: dict[str, list[ManPage]] = {}
            order = sorted(
                pages, key=lambda p: (-languages_of[(p.name, p.section)], content_hash(p.name, p.section))
            )
            for p in order:
                by_lang.setdefault(p.lang, []).append(p)
            pages = [p for ps in by_lang.values() for p in ps[: self.max_per_language]]
        return [pages[i : i + self.chunk] for i in range(0, len(pages), self.chunk)]

    def read(self, unit: list[ManPage]) -> Iterator[Record]:
        for page in unit:
            yield from self._read_page(page)

    def _read_page(self, page: ManPage) -> Iterator[Record]:
        loc = str(page.path)
        if page.path.is_symlink():
            target = os.path.realpath(page.path)
            yield Rejected(self.name, loc, "alias", f"symlink to {target}", page.lang)
            return
        try:
            raw = page.path.read_bytes()
            raw = gzip.decompress(raw) if page.path.suffix == ".gz" else raw
        except (OSError, EOFError) as err:
            yield Rejected(self.name, loc, "unreadable", f"{type(err).__name__}: {err}", page.lang)
            return
        head = raw.lstrip()[:300]
        if head.startswith(b".so ") and raw.count(b"\n") <= 2:
            yield Rejected(self.name, loc, "alias", head.decode("utf-8", "replace").strip(), page.lang)
            return
        try:
            text = render(page.path)
        except (RuntimeError, subprocess.TimeoutExpired, OSError) as err:
            yield Rejected(self.name, loc, "render-failed", str(err)[:500], page.lang)
            return
        rendered = split_sections(text)
        if not rendered.sections:
            yield Rejected(self.name, loc, "no-sections", "", page.lang, text[:500])
            return
        key = page_key(page.name, page.section)
        name_line = _unwrap(rendered.sections[0][1])
        parts = _DASH.split(name_line, maxsplit=1)
        summary = parts[1].strip() if len(parts) == 2 else ""
        full = "\n\n".join(f"{h}\n{b}" for h, b in rendered.sections)
        doc = Document(
            title=f"{page.name}({page.section})",
            text=full,
            lang=page.lang,
            source=self.name,
            location=loc,
            group_key=key,
            meta={"name": page.name, "section": page.section, "summary": summary, "header": rendered.header},
        )
        yield doc
        if not summary:
            yield Rejected(
                self.name,
                loc + "#NAME",
                "no-summary",
                "NAME line has no ' - ' summary",
                page.lang,
                name_line[:500],
            )
            return
        desc = description_of(rendered)
        if not desc:
            yield Rejected(self.name, loc + "#DESCRIPTION", "no-description", "", page.lang, full[:500])
            return
        passage = truncate_paragraphs(_unwrap(desc), self.max_passage_chars)
        yield Pair(
            "title-body", summary, passage, page.lang, page.lang, self.name, loc, key, doc_id=doc.doc_id
        )
