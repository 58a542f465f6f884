"""Text cleanup and filters: Unicode normalization, whitespace, UI-string artifacts, length limits.

Functions return cleaned text; `check_*` functions return a rejection reason (or None) so callers can
quarantine with it. Reasons are short stable strings (they are grouped on in run summaries).
"""

from __future__ import annotations

import html
import re
import unicodedata
from dataclasses import dataclass

# C0/C1 control characters except tab/newline, plus zero-width and BOM characters.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200d\u2060\ufeff]")
_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200a\u202f\u205f\u3000]+")
_BLANK_LINES = re.compile(r"\n{3,}")
# printf (%s, %-5.2lf, %1$s, %(name)s), brace ({0}, {name}), shell/perl ($var, ${var}) placeholders.
_FORMAT = re.compile(
    r"%(?:\d+\$)?(?:\([\w.]+\))?[-+ #0']*(?:\d+|\*)?(?:\.(?:\d+|\*))?(?:hh|h|ll|l|L|q|j|z|t|I64)?[diouxXeEfFgGaAcspnm%]"
    r"|\{[\w.:!\-]*\}|\$\{?\w+\}?|<[^<>]*>"
)
# Accelerator marks: CJK-style "(_F)" / "(&F)" suffixes, GTK "_File", Qt "&File", LibreOffice "~File".
_ACCEL_PAREN = re.compile(r"\s*\((?:_|&|~)\w\)")
_ACCEL_UNDERSCORE = re.compile(r"(?<![\w_])_(?=\w)")
_ACCEL_AMP = re.compile(r"&(?!(?:[a-zA-Z]+|#\d+|#x[0-9a-fA-F]+);)(?=\w)")
_ACCEL_TILDE = re.compile(r"~(?=\w)")
_TAG = re.compile(r"</?[a-zA-Z][\w:-]*(?:\s[^<>]*)?/?>")


def normalize_text(text: str, *, keep_newlines: bool = False) -> str:
    """NFC, control characters removed, whitespace collapsed (paragraphs kept when `keep_newlines`).

    >>> normalize_text("  Caf\\u0065\\u0301 \\t  ouvert\\u200b \\n\\n\\n\\n fin ")
    'Café ouvert fin'
    >>> normalize_text("a  b\\n\\n\\n\\nc ", keep_newlines=True)
    'a b\\n\\nc'
    """
    text = unicodedata.normalize("NFC", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _CONTROL.sub("", text)
    if not keep_newlines:
        return " ".join(text.split())
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def clean_ui_string(text: str) -> str:
    """Strip what software UI strings carry besides words: accelerator marks, markup, entities.

    >>> [clean_ui_string(s) for s in ["_Open File…", "&Save && Quit", "ファイル(_F)", "<b>Bold</b> &amp; more"]]
    ['Open File…', 'Save & Quit', 'ファイル', 'Bold & more']
    """
    # Each substitution only when its character occurs: most strings have none (mining speed).
    if "(" in text:
        text = _ACCEL_PAREN.sub("", text)
    if "_" in text:
        text = _ACCEL_UNDERSCORE.sub("", text)
    if "&" in text:
        text = _ACCEL_AMP.sub("", text).replace("&&", "&")
    if "~" in text:
        text = _ACCEL_TILDE.sub("", text)
    if "<" in text:
        text = _TAG.sub("", text)
    if "&" in text:
        text = html.unescape(text)
    return normalize_text(text)


def letters(text: str) -> int:
    """Number of letter characters (any script)."""
    return sum(map(str.isalpha, text))


@dataclass(frozen=True)
class LengthLimits:
    """Length filters in characters (texts) and letters (after removing placeholders)."""

    min_letters: int = 2
    max_query_chars: int = 1_000
    max_passage_chars: int = 4_000
    min_document_chars: int = 200
    max_document_chars: int = 200_000


def check_text(text: str, *, max_chars: int, min_letters: int = 2) -> str | None:
    """A rejection reason for one cleaned text, or None if it is usable.

    >>> [check_text(t, max_chars=20) for t in ["", "%s: %d", "x", "Open file", "y" * 21]]
    ['empty', 'format-only', 'too-short', None, 'too-long']
    """
    if not text:
        return "empty"
    content = _FORMAT.sub("", text) if ("%" in text or "{" in text or "$" in text or "<" in text) else text
    n = letters(content)
    if n == 0:
        return "format-only" if content != text else "no-letters"
    if n < min_letters:
        return "too-short"
    if len(text) > max_chars:
        return "too-long"
    return None


def strip_placeholders(text: str) -> str:
    """The text without format placeholders/markup (for comparing a source with its translation)."""
    return normalize_text(_FORMAT.sub(" ", text))
