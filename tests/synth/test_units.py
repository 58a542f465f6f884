"""Unit tests of the synth parts that need no server: parsing, validation, paragraphs, budget, keys, config."""

from __future__ import annotations

import itertools
import random

import pytest
from pydantic import ValidationError

from synth import validate
from synth.budget import Budget, estimate_prompt_tokens
from synth.client import parse_question, request_key
from synth.config import BudgetConfig, EndpointConfig, GenerationParams, SelectionConfig, ValidationConfig
from synth.generate import choose_paragraph, paragraph_spans
from synth.prompts import PROMPT_VERSION, build_messages

PARA_DE = (
    "Mit der Option --extract entpackt tar alle Dateien eines Archivs in das aktuelle Verzeichnis. "
    "Mit -C wird vorher in ein anderes Verzeichnis gewechselt."
)


@pytest.mark.parametrize(
    "reply",
    [
        '{"question": "Q?"}',
        ' {"question":"Q?"} ',
        '```json\n{"question": "Q?"}\n```',
        'Here you go: {"question": "Q?"} Hope it helps.',
        '{"question": "Q?',  # cut off by max_tokens
        '"Q?"',
        "Question: Q?",
        "Q?\nExplanation: this asks about Q.",
    ],
)
def test_parse_question_tolerates_what_models_do(reply):
    assert parse_question(reply) == "Q?"


@pytest.mark.parametrize("reply", [None, "", "   ", '{"question": ""}', "```\n```"])
def test_parse_question_empty(reply):
    assert parse_question(reply) is None


def _check(reply: str, paragraph: str = PARA_DE, lang: str = "de", validator=None, **cfg):
    v = validator or validate.Validator(ValidationConfig(**cfg))
    return v.check(reply, paragraph, lang)


def test_validator_accepts_a_good_question_and_records_its_language():
    verdict = _check('{"question": "Mit welcher Option entpackt man bei tar ein Archiv?"}')
    assert verdict.accepted and verdict.reason is None
    assert verdict.query_lang == "de" and verdict.query_lang_conf > 0.5


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ("", validate.EMPTY),
        ('{"question": "tar?"}', validate.TOO_SHORT),
        ('{"question": "' + "Wie entpackt man mit tar ein Archiv " * 12 + '?"}', validate.TOO_LONG),
        ('{"question": "Which option makes tar extract an archive?"}', validate.WRONG_LANGUAGE),
        ('{"question": "Mit -C wird vorher in ein anderes Verzeichnis gewechselt?"}', validate.COPIED),
        ('{"question": "Mit der Option -C wechselt tar das Verzeichnis."}', validate.NOT_A_QUESTION),
        ('{"question": "Dokument: tar(1) Absatz: Was macht -C?"}', validate.PROMPT_ECHO),
        # the worked example with one word changed is still the example
        (
            '{"question": "Mit welcher Option zeigt tar auch versteckte Dateien an, deren Name mit einem Punkt beginnt?"}',
            validate.PROMPT_ECHO,
        ),
        ('{"question": "Wie kocht man im Winter eine gute Gemüsesuppe?"}', validate.OFF_TOPIC),
    ],
)
def test_validator_rejects_with_reason(reply, reason):
    verdict = _check(reply)
    assert not verdict.accepted and verdict.reason == reason and verdict.detail


def test_validator_deduplicates_across_case_spacing_and_punctuation():
    v = validate.Validator(ValidationConfig())
    first = _check('{"question": "Mit welcher Option entpackt man bei tar ein Archiv?"}', validator=v)
    again = _check('{"question": "mit welcher  Option entpackt man bei TAR ein Archiv ?"}', validator=v)
    assert first.accepted and not again.accepted and again.reason == validate.DUPLICATE
    # ... and remembers queries accepted by earlier runs
    v2 = validate.Validator(ValidationConfig(), seen={validate.normalize(first.query)})
    assert (
        _check('{"question": "Mit welcher Option entpackt man bei tar ein Archiv?"}', validator=v2).reason
        == "duplicate"
    )


def test_language_check_uses_base_codes():
    zh = "如何使用 tar 命令把归档文件解压到当前目录？"
    assert _check(
        f'{{"question": "{zh}"}}', "tar 命令可以把归档文件解压到当前目录，也可以创建新的归档。", "zh-CN"
    ).accepted


def test_paragraph_spans_cover_text_exactly_and_respect_bounds():
    rng = random.Random(7)
    words = ["alpha", "beta", "gamma", "delta", "epsilon"]
    blocks = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 120))) for _ in range(30)]
    text = "\n\n".join("    " + b for b in blocks)
    spans = paragraph_spans(text, 100, 400)
    assert spans, "a long text must have paragraphs"
    for s, e in spans:
        assert 100 <= e - s <= 400
        assert not text[s].isspace() and not text[e - 1].isspace()
    assert all(a[1] <= b[0] for a, b in itertools.pairwise(spans))  # ordered, not overlapping


def test_paragraph_choice_is_seeded():
    text = "\n\n".join(f"Paragraph {i} " + "word " * 50 for i in range(20))
    sel = SelectionConfig(paragraph_min_chars=100, paragraph_max_chars=400, seed=1)
    picks = {choose_paragraph(text, "doc-1", sel) for _ in range(5)}
    assert len(picks) == 1
    others = {choose_paragraph(text, "doc-1", sel.model_copy(update={"seed": s})) for s in range(2, 12)}
    assert len(others) > 1


def test_budget_reserves_worst_case_and_settles_real_usage():
    b = Budget(BudgetConfig(max_tokens=1000, price_input_per_m=0.15, price_output_per_m=0.60))
    assert b.reserve(400, 100) is None
    assert b.reserve(400, 100) is None
    assert b.reserve(400, 100) == "token cap (1000)"  # 3 x 500 worst case > 1000
    b.settle(400, 100, 300, 20)  # one returns: 320 used, 500 still reserved
    assert b.used.tokens == 320
    assert b.reserve(400, 100) == "token cap (1000)"  # 320 + 500 + 500 > 1000
    b.settle(400, 100, 100, 10)  # the other returns: 430 used, nothing reserved
    assert b.reserve(400, 100) is None  # 430 + 500 <= 1000


def test_budget_request_and_cost_caps():
    b = Budget(BudgetConfig(max_requests=2))
    assert b.reserve(10, 10) is None and b.reserve(10, 10) is None
    assert b.reserve(10, 10) == "request cap (2)"
    c = Budget(BudgetConfig(max_cost_usd=1e-4, price_input_per_m=1.0, price_output_per_m=1.0))
    assert c.reserve(50, 40) is None  # $0.00009
    assert c.reserve(50, 40) == "cost cap ($0.0001)"
    c.settle(50, 40, 10, 5)
    assert c.used.cost_usd == pytest.approx(15e-6)


def test_estimate_prompt_tokens_overestimates_cjk_and_latin():
    msgs = build_messages("zh", "tar", "归档" * 50)
    assert estimate_prompt_tokens(msgs) >= 100


def test_request_key_depends_on_model_prompt_and_params():
    msgs = build_messages("de", "tar(1)", PARA_DE)
    p = GenerationParams()
    k = request_key("m", msgs, p, True)
    assert k == request_key("m", [dict(m) for m in msgs], GenerationParams(), True)
    assert k != request_key("m2", msgs, p, True)
    assert k != request_key("m", build_messages("de", "tar(1)", PARA_DE + "!"), p, True)
    assert k != request_key("m", msgs, GenerationParams(temperature=0.1), True)
    assert k != request_key("m", msgs, p, False)


def test_prompts_are_in_the_document_language_and_versioned():
    assert PROMPT_VERSION
    for lang, word in [
        ("de", "Frage"),
        ("fr", "question"),
        ("ru", "вопрос"),
        ("ja", "質問"),
        ("pt_BR", "pergunta"),
    ]:
        messages = build_messages(lang, "t", "PARA-XYZ")
        assert word in messages[-1]["content"] and "PARA-XYZ" in messages[-1]["content"]
        # the worked example is in the same language as the instruction
        assert (
            messages[2]["role"] == "assistant"
            and validate.detect_language(messages[2]["content"])[0][0] == lang[:2]
        )


def test_endpoint_config_validates_and_hides_credentials():
    ep = EndpointConfig(base_url="https://api.example.test:8443/v1/")
    assert ep.base_url == "https://api.example.test:8443/v1" == ep.safe_base_url()
    with pytest.raises(ValidationError, match="must not carry credentials") as err:
        EndpointConfig(base_url="https://user:hunter2@api.example.test:8443/v1/")
    assert "hunter2" not in str(err.value)
    with pytest.raises(ValidationError, match="not an http"):
        EndpointConfig(base_url="api.example.test")
    with pytest.raises(ValidationError, match="paragraph_max_chars"):
        SelectionConfig(paragraph_min_chars=500, paragraph_max_chars=100)


def test_synth_config_rejects_unknown_keys_with_their_name():
    """A typo in a money cap must fail, not send every request (`max_request` for `max_requests`)."""
    from pydantic import ValidationError

    from synth.config import SynthConfig

    with pytest.raises(ValidationError, match=r"budget\.max_request\n"):
        SynthConfig.model_validate({"budget": {"max_request": 1}})
