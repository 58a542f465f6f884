"""Generated multilingual text for tests: seeded, offline, with query→passage structure to learn from.

Each topic has a few keywords per language; a passage mentions its topic's keywords among filler words, and a
query is two of those keywords. Retrieval on such data is learnable (lexical overlap for the sparse head, topic
identity for dense/ColBERT) while a random model scores it near chance.
"""

from __future__ import annotations

import random

WORDS = {
    "en": [
        "river",
        "mountain",
        "engine",
        "coffee",
        "garden",
        "violin",
        "winter",
        "printer",
        "harbor",
        "planet",
        "kernel",
        "bridge",
    ],
    "de": [
        "Fluss",
        "Berg",
        "Motor",
        "Kaffee",
        "Garten",
        "Geige",
        "Winter",
        "Drucker",
        "Hafen",
        "Planet",
        "Kern",
        "Brücke",
    ],
    "fr": [
        "rivière",
        "montagne",
        "moteur",
        "café",
        "jardin",
        "violon",
        "hiver",
        "imprimante",
        "port",
        "planète",
        "noyau",
        "pont",
    ],
    "ru": [
        "река",
        "гора",
        "двигатель",
        "кофе",
        "сад",
        "скрипка",
        "зима",
        "принтер",
        "гавань",
        "планета",
        "ядро",
        "мост",
    ],
    "zh": [
        "河流",
        "山脉",
        "引擎",
        "咖啡",
        "花园",
        "小提琴",
        "冬天",
        "打印机",
        "港口",
        "行星",
        "内核",
        "桥梁",
    ],
    "ar": ["نهر", "جبل", "محرك", "قهوة", "حديقة", "كمان", "شتاء", "طابعة", "ميناء", "كوكب", "نواة", "جسر"],
}
FILLER = {
    "en": [
        "the",
        "a",
        "of",
        "and",
        "with",
        "is",
        "was",
        "very",
        "some",
        "many",
        "this",
        "that",
        "which",
        "for",
        "on",
    ],
    "de": [
        "der",
        "die",
        "das",
        "und",
        "mit",
        "ist",
        "war",
        "sehr",
        "einige",
        "viele",
        "dies",
        "jenes",
        "für",
        "auf",
    ],
    "fr": [
        "le",
        "la",
        "les",
        "et",
        "avec",
        "est",
        "était",
        "très",
        "quelques",
        "beaucoup",
        "ce",
        "cette",
        "pour",
        "sur",
    ],
    "ru": ["и", "в", "на", "с", "это", "был", "очень", "некоторые", "многие", "тот", "который", "для", "по"],
    "zh": ["的", "了", "和", "是", "在", "有", "这", "那", "很", "一些", "许多", "为", "上"],
    "ar": ["في", "من", "على", "مع", "هذا", "كان", "جدا", "بعض", "كثير", "الذي", "ل", "و"],
}


def sentences(n: int, seed: int = 0) -> list[str]:
    """`n` random sentences in all languages (tokenizer training text)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        lang = list(WORDS)[i % len(WORDS)]
        words = rng.choices(WORDS[lang] + FILLER[lang], k=rng.randint(4, 16))
        out.append(" ".join(words))
    return out


def retrieval_pairs(n_topics: int = 24, seed: int = 0, passage_words: int = 24) -> list[dict]:
    """FlagEmbedding-style examples `{"query", "pos", "neg", "lang"}` with 2 keywords per query."""
    rng = random.Random(seed)
    examples = []
    for t in range(n_topics):
        lang = list(WORDS)[t % len(WORDS)]
        vocab = WORDS[lang]
        keys = rng.sample(vocab, 3)
        body = rng.choices(FILLER[lang], k=passage_words) + keys * 2
        rng.shuffle(body)
        others = [w for w in vocab if w not in keys]
        neg_body = rng.choices(FILLER[lang], k=passage_words) + rng.sample(others, 3) * 2
        rng.shuffle(neg_body)
        examples.append(
            {"query": " ".join(keys[:2]), "pos": [" ".join(body)], "neg": [" ".join(neg_body)], "lang": lang}
        )
    return examples


def long_text(n_words: int, seed: int = 0, lang: str = "en") -> str:
    rng = random.Random(seed)
    return " ".join(rng.choices(WORDS[lang] + FILLER[lang], k=n_words))


def write_training_jsonl(path, examples: list[dict]):
    """FlagEmbedding training lines (`query`, `pos`, `neg`) for `examples`; returns `path`."""
    import json

    with open(path, "w", encoding="utf-8") as fh:
        for e in examples:
            fh.write(json.dumps({k: e[k] for k in ("query", "pos", "neg")}) + "\n")
    return path


def tiny_train_config(model, output_dir, data, **overrides):
    """A `TrainConfig` sized for the tiny test model (short texts, small batches, no progress bar)."""
    from m3core.train import TrainConfig

    base = {
        "model": str(model), "output_dir": str(output_dir), "train_data": [str(data)], "group_size": 2,
        "tokens_per_batch": 1024, "max_batch_size": 4, "logging_steps": 1, "show_progress": False,
        "query_max_length": 16, "passage_max_length": 64,
    }  # fmt: skip
    return TrainConfig(**{**base, **overrides})


def write_toy_eval_sets(root, langs, n_topics: int, seed: int):
    """One monolingual BEIR set `toy-<lang>` per language under `root`, from `retrieval_pairs` (keyword queries,
    topic passages; each query's positive judged relevant, its negative in the corpus too); returns `root`."""
    from m3core.evaluation import EvalSet, write_eval_set

    by_lang: dict[str, list[dict]] = {}
    for e in retrieval_pairs(n_topics, seed=seed):
        by_lang.setdefault(e["lang"], []).append(e)
    for lang in langs:
        exs = by_lang[lang]
        corpus = {f"d{i}": e["pos"][0] for i, e in enumerate(exs)} | {
            f"n{i}": e["neg"][0] for i, e in enumerate(exs)
        }
        queries = {f"q{i}": e["query"] for i, e in enumerate(exs)}
        qrels = {f"q{i}": {f"d{i}": 1} for i in range(len(exs))}
        meta = {"lang": lang, "query_lang": lang, "corpus_lang": lang, "kind": "monolingual"}
        write_eval_set(root / f"toy-{lang}", EvalSet(f"toy-{lang}", corpus, queries, qrels, meta))
    return root
