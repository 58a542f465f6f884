"""Typed configuration of a synthetic-query run (pydantic; saved with every run, minus any secret).

The API key is deliberately *not* a field: configs are serialized into the warehouse and into flow
artifacts, so they carry only the *name* of the environment variable that holds the key. The key itself
lives in a `SecretStr` that exists only inside the client (see `synth.client.resolve_api_key`).
"""

from __future__ import annotations

from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# The port `m3 llm serve` uses by default; the endpoint default points at it so the embedded default works
# with no configuration at all.
DEFAULT_LOCAL_PORT = 8088


class _Strict(BaseModel):
    """Unknown keys are errors naming the key: a typo in a money cap (`budget: {max_request: 1}`) must not be
    ignored and every request sent."""

    # A rejected value is not echoed in the error (an endpoint URL may carry credentials).
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)


class EndpointConfig(_Strict):
    """Where to send chat-completion requests: any OpenAI-compatible server (OpenAI, vLLM, Ollama, llama.cpp)."""

    base_url: str = f"http://127.0.0.1:{DEFAULT_LOCAL_PORT}/v1"
    model: str = "local"
    # Name of the environment variable holding the key; unset/empty means "no key needed" (local servers).
    api_key_env: str = "M3_LLM_API_KEY"
    timeout_s: float = Field(60.0, gt=0, description="per-attempt HTTP timeout")
    max_attempts: int = Field(6, ge=1, description="attempts per request, first try included")
    backoff_base_s: float = Field(0.5, ge=0, description="first retry delay; doubles each attempt")
    backoff_max_s: float = Field(30.0, ge=0)
    # Cap on a server-directed wait: a Retry-After larger than this is clamped, never obeyed blindly.
    retry_after_max_s: float = Field(120.0, ge=0)
    concurrency: int = Field(2, ge=1, le=256)
    # "auto": ask for OpenAI-style json_schema output, then llama-cpp-python's json_object+schema, then plain
    # text, stepping down when the server refuses the parameter.
    structured_output: Literal["auto", "json_schema", "json_object", "none"] = "auto"

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        parts = urlsplit(v)
        if parts.username is not None or parts.password is not None:
            # Never repeat the URL here: its userinfo is the secret.
            raise ValueError(
                "base_url must not carry credentials (user:key@host): they would be stored with the run and sent "
                "as Basic auth; put the key in the environment variable named by api_key_env instead"
            )
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError(f"base_url {v!r} is not an http(s) URL")
        return v.rstrip("/")

    def safe_base_url(self) -> str:
        """The base URL without any `user:password@` part, fit for logs and the warehouse."""
        parts = urlsplit(self.base_url)
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class GenerationParams(_Strict):
    """Sampling parameters; part of the request cache key."""

    temperature: float = Field(0.7, ge=0, le=2)
    max_tokens: int = Field(96, ge=8, le=4096)
    top_p: float = Field(0.95, gt=0, le=1)
    seed: int | None = 0
    # Show the model one worked example (in the document's language) before the real paragraph.
    prompt_example: bool = True


class SelectionConfig(_Strict):
    """Which documents and which paragraph of each."""

    languages: list[str] = Field(default_factory=list, description="empty: every language in the warehouse")
    per_language: int = Field(20, ge=1, description="documents per language")
    min_tokens: int = Field(300, ge=0, description="minimum document length in (approximate) tokens")
    paragraph_min_chars: int = Field(200, ge=20)
    paragraph_max_chars: int = Field(1200, ge=40)
    seed: int = 0
    source: str | None = Field(None, description="only documents from this source (e.g. 'manpages')")
    splits: list[Literal["train", "dev", "test"]] = Field(
        default_factory=list,
        description="only documents whose group falls in these splits (empty: all); [train] for training data, "
        "so no question is asked about a held-out document",
    )

    @model_validator(mode="after")
    def _bounds(self) -> SelectionConfig:
        if self.paragraph_max_chars < self.paragraph_min_chars:
            raise ValueError(
                f"paragraph_max_chars ({self.paragraph_max_chars}) < paragraph_min_chars ({self.paragraph_min_chars})"
            )
        return self


class ValidationConfig(_Strict):
    """What makes a generated query acceptable."""

    min_chars: int = Field(12, ge=1)
    max_chars: int = Field(300, ge=2)
    # Reject when this share of the query (normalized) is one contiguous copy out of the paragraph.
    max_copied_fraction: float = Field(0.9, gt=0, le=1)
    # The document language must be among the detector's top-k guesses for the query. Command names and
    # options in man-page questions are English tokens, which pulls short queries towards "en".
    lang_top_k: int = Field(1, ge=1, le=5)


class BudgetConfig(_Strict):
    """Caps per run (None: no cap) and prices for cost accounting (USD per million tokens)."""

    max_requests: int | None = Field(None, ge=0)
    max_tokens: int | None = Field(None, ge=0, description="prompt + completion tokens")
    max_cost_usd: float | None = Field(None, ge=0)
    price_input_per_m: float = Field(0.0, ge=0)
    price_output_per_m: float = Field(0.0, ge=0)


class SynthConfig(_Strict):
    """Everything a run needs; `model_dump_json()` is what gets stored with the run."""

    endpoint: EndpointConfig = Field(default_factory=EndpointConfig)
    params: GenerationParams = Field(default_factory=GenerationParams)
    selection: SelectionConfig = Field(default_factory=SelectionConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
