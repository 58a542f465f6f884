"""A chat-completion client for any OpenAI-compatible endpoint, with our own retry loop.

The `openai` SDK does the HTTP and the protocol. Its built-in retries are switched off (`max_retries=0`)
and replaced by the loop below because we need what the SDK hides: the number of attempts per request
(stored in the warehouse and reported), a configurable backoff (tests run it with millisecond delays), a
cap on server-directed waits, and retries on a 200 whose body is not valid JSON (a proxy or an overloaded
server cut short), which the SDK surfaces as a parse error. The backoff is "full jitter" exponential:
base·2^(attempt-1), capped, times a random factor in [0.5, 1). A stop signal (`ChatClient.stop()`, set by the
run on Ctrl-C or a fatal error) cuts every backoff short and starts no further attempt: stopping waits at most
for the attempt on the wire (bounded by `timeout_s`), never for retries.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import re
import threading
import time
from dataclasses import dataclass
from typing import Any, Literal

import openai
from pydantic import SecretStr

from synth.config import EndpointConfig, GenerationParams
from synth.prompts import QUESTION_SCHEMA

log = logging.getLogger(__name__)

# Placeholder sent when no key is configured: the SDK refuses an empty key, local servers ignore it.
NO_KEY = "no-key-required"
JSON_SCHEMA = "json_schema"
JSON_OBJECT = "json_object"


FORMAT_WORDS = re.compile(r"response_format|json_schema|json_object|guided_json|grammar", re.IGNORECASE)


class FatalEndpointError(RuntimeError):
    """The endpoint refuses every request (bad key, unknown model, wrong URL): retrying cannot help."""


@dataclass
class CallResult:
    """Outcome of one logical request (all its attempts)."""

    status: Literal["ok", "error"]
    text: str | None
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    attempts: int
    error: str | None = None
    structured: bool = False
    # The client was stopped before the request got an answer: no outcome (the run does not store it; a rerun
    # sends it again).
    interrupted: bool = False


def resolve_api_key(endpoint: EndpointConfig) -> SecretStr | None:
    """The key from the environment variable the config names, wrapped so it never prints."""
    value = os.environ.get(endpoint.api_key_env, "").strip()
    return SecretStr(value) if value else None


def request_key(
    model: str, messages: list[dict[str, str]], params: GenerationParams, structured: bool
) -> str:
    """Cache key: sha256 over the canonical JSON of everything that determines the response."""
    payload = {
        "model": model,
        "messages": messages,
        "params": params.model_dump(),
        "schema": QUESTION_SCHEMA if structured else None,
    }
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def parse_question(text: str | None) -> str | None:
    """Pull the question out of a model reply, tolerating what small models do to JSON.

    >>> parse_question('{"question": "Wie entpackt tar ein Archiv?"}')
    'Wie entpackt tar ein Archiv?'
    >>> parse_question('```json\\n{"question": "How does ls sort?"}\\n```')
    'How does ls sort?'
    >>> parse_question('Sure! {"question": "What does -r do in rm?"')
    'What does -r do in rm?'
    >>> parse_question('Question: How does grep count matches?')
    'How does grep count matches?'
    >>> parse_question('   ') is None
    True
    """
    if text is None or not text.strip():
        return None
    raw = text.strip()
    # 1) the whole reply, or the first {...} inside it, is JSON with a "question" string
    candidates = [raw]
    match = re.search(r"\{.*\}", raw, flags=re.DOTALL)
    if match:
        candidates.append(match.group(0))
    for cand in candidates:
        try:
            obj = json.loads(cand)
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and isinstance(obj.get("question"), str):
            return obj["question"].strip() or None
        if isinstance(obj, str):
            return obj.strip() or None
    # 2) truncated JSON: a "question": "... value without its closing quote/brace
    match = re.search(r'"question"\s*:\s*"((?:[^"\\]|\\.)*)', raw, flags=re.DOTALL)
    if match:
        try:
            value = json.loads(f'"{match.group(1)}"')
        except json.JSONDecodeError:
            value = match.group(1)
        return value.strip() or None
    # 3) plain text: drop fences and a "Question:" label, keep the first non-empty line
    lines = [
        ln.strip() for ln in raw.replace("```", "\n").splitlines() if ln.strip() and ln.strip() != "json"
    ]
    if not lines:
        return None
    line = re.sub(
        r"^(question|frage|question\s?:|pregunta|вопрос|问题|質問)\s*[:：]\s*", "", lines[0], flags=re.I
    )
    return line.strip().strip('"').strip() or None


def _retry_after(err: openai.APIStatusError) -> float | None:
    """Seconds the server asked us to wait (Retry-After / retry-after-ms), or None."""
    headers = err.response.headers
    for name, scale in (("retry-after-ms", 1000.0), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value) / scale)
        except ValueError:
            continue  # an HTTP date: rare from LLM servers; fall back to our own backoff
    return None


class ChatClient:
    """Sends one chat request with retries; safe to share between threads.

    `stop()` ends every `complete` call in progress at its next backoff, or when its attempt on the wire returns,
    and makes later calls return at once (results marked `interrupted`).
    """

    def __init__(self, endpoint: EndpointConfig, api_key: SecretStr | None = None) -> None:
        self.endpoint = endpoint
        self._stop = threading.Event()
        # Structured-output dialects to try, best first: OpenAI's json_schema (OpenAI, vLLM, Ollama, llama.cpp's
        # own server) and llama-cpp-python's json_object + schema; "auto" steps down when the server rejects one.
        mode = endpoint.structured_output
        self._formats: list[str | None] = {"auto": [JSON_SCHEMA, JSON_OBJECT, None], "none": [None]}.get(
            mode, [mode]
        )
        self._lock = threading.Lock()
        key = api_key if api_key is not None else resolve_api_key(endpoint)
        # Whatever a server echoes (e.g. "Incorrect API key provided: Bearer <key>") is redacted from every error
        # text this client returns, logs or raises: they end up in the warehouse and in flow logs.
        self._secrets = [key.get_secret_value()] if key and len(key.get_secret_value()) >= 4 else []
        self._client = openai.OpenAI(
            base_url=endpoint.base_url,
            api_key=key.get_secret_value() if key else NO_KEY,
            max_retries=0,
            timeout=endpoint.timeout_s,
        )

    def stop(self) -> None:
        """No new attempt from now on, in any thread; backoff sleeps in progress end now."""
        self._stop.set()

    @property
    def structured(self) -> bool:
        """Whether requests currently ask for schema-constrained output."""
        return self._formats[0] is not None

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> ChatClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _backoff(self, attempt: int) -> float:
        ep = self.endpoint
        return min(ep.backoff_max_s, ep.backoff_base_s * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)

    def _kwargs(self, messages: list[dict[str, str]], params: GenerationParams) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "model": self.endpoint.model,
            "messages": messages,
            "temperature": params.temperature,
            "max_tokens": params.max_tokens,
            "top_p": params.top_p,
        }
        if params.seed is not None:
            kwargs["seed"] = params.seed
        fmt = self._formats[0]
        if fmt == JSON_SCHEMA:
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "question", "schema": QUESTION_SCHEMA, "strict": True},
            }
        elif fmt == JSON_OBJECT:
            kwargs["response_format"] = {"type": "json_object", "schema": QUESTION_SCHEMA}
        return kwargs

    def _drop_format(self, fmt: str | None, err: openai.APIStatusError) -> bool:
        """If `err` is the server refusing response format `fmt` (and "auto" allows it), step down; else False.

        Servers say so differently: OpenAI/vLLM with 400, pydantic-validated servers with 422, and
        llama-cpp-python with a 500 whose body names `response_format`.
        """
        if fmt is None or len(self._formats) < 2 or err.status_code not in (400, 422, 500):
            return False
        # Only a refusal that names the format: any other 400 (a too-long prompt, a bad parameter) must not
        # downgrade the dialect for the rest of the run.
        if not FORMAT_WORDS.search(str(err)):
            return False
        with self._lock:
            if self._formats[0] == fmt:
                self._formats.pop(0)
                log.warning("endpoint refused response_format %s (HTTP %d); now using %s", fmt, err.status_code,
                            self._formats[0] or "plain text")  # fmt: skip
        return True

    def complete(self, messages: list[dict[str, str]], params: GenerationParams) -> CallResult:
        """Send `messages`; retry transient failures; return the text and token counts, or the last error."""
        ep = self.endpoint
        attempt = 0
        last_error = "no attempt made"
        t_start = time.monotonic()
        while attempt < ep.max_attempts:
            if self._stop.is_set():
                return self._interrupted(last_error, attempt, t_start)
            attempt += 1
            fmt = self._formats[0]
            kwargs = self._kwargs(messages, params)
            delay: float | None = None
            try:
                resp = self._client.chat.completions.create(**kwargs)
                if not resp.choices or resp.choices[0].message is None:
                    raise ValueError("response has no choices")
                text = resp.choices[0].message.content
                usage = resp.usage
                return CallResult(
                    status="ok",
                    text=text,
                    prompt_tokens=int(usage.prompt_tokens) if usage else 0,
                    completion_tokens=int(usage.completion_tokens) if usage else 0,
                    latency_s=time.monotonic() - t_start,
                    attempts=attempt,
                    structured="response_format" in kwargs,
                )
            except (openai.AuthenticationError, openai.PermissionDeniedError, openai.NotFoundError) as err:
                # Never include the request (it carries the key in a header); the status and server text only.
                raise FatalEndpointError(
                    f"{ep.safe_base_url()} answered HTTP {err.status_code} for model {ep.model!r}: {self._short(err)}"
                ) from None
            except openai.APIStatusError as err:
                if self._drop_format(fmt, err):
                    attempt -= 1  # a capability probe, not a failed attempt
                    continue
                last_error = f"HTTP {err.status_code}: {self._short(err)}"
                if err.status_code not in (408, 409, 429) and err.status_code < 500:
                    return self._error(last_error, attempt, t_start)
                server_delay = _retry_after(err)
                if server_delay is not None:
                    delay = min(server_delay, ep.retry_after_max_s)
            except openai.APITimeoutError:
                last_error = f"timeout after {ep.timeout_s:g} s"
            except openai.APIConnectionError as err:
                # The SDK's text is just "Connection error."; the cause says which: refused, reset, cut off.
                last_error = f"connection error: {self._short(_root_cause(err))}"
            except (openai.APIResponseValidationError, json.JSONDecodeError, ValueError) as err:
                # 200 with a body that is not the JSON it should be: transient on real servers.
                last_error = f"malformed response: {self._short(err)}"
            if attempt >= ep.max_attempts:
                break
            wait = delay if delay is not None else self._backoff(attempt)
            log.info(
                "attempt %d/%d failed (%s); retrying in %.2f s", attempt, ep.max_attempts, last_error, wait
            )
            if self._stop.wait(wait):  # stopped during the backoff: no further attempt
                return self._interrupted(last_error, attempt, t_start)
        return self._error(last_error, attempt, t_start)

    def _short(self, err: BaseException) -> str:
        """The error's text, one line, at most 200 characters, with the key redacted."""
        return _short(redact(" ".join(str(err).split()), self._secrets))

    @staticmethod
    def _interrupted(last_error: str, attempts: int, t_start: float) -> CallResult:
        log.info("request stopped after %d attempt(s) (last: %s)", attempts, last_error)
        message = f"stopped after {attempts} attempt(s); last: {last_error}"
        return CallResult(
            "error", None, 0, 0, time.monotonic() - t_start, attempts, message, interrupted=True
        )

    @staticmethod
    def _error(message: str, attempts: int, t_start: float) -> CallResult:
        log.warning("request failed after %d attempt(s): %s", attempts, message)
        return CallResult("error", None, 0, 0, time.monotonic() - t_start, attempts, error=message)


def _root_cause(err: BaseException) -> BaseException:
    """The innermost exception in `err`'s cause chain that says something (`err` itself if none does).

    >>> try:
    ...     try:
    ...         raise ConnectionRefusedError(111, "Connection refused")
    ...     except OSError as inner:
    ...         raise RuntimeError("Connection error.") from inner
    ... except RuntimeError as outer:
    ...     print(_root_cause(outer))
    [Errno 111] Connection refused
    """
    found, seen = err, {id(err)}
    cur = err.__cause__ or err.__context__
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if str(cur).strip():
            found = cur
        cur = cur.__cause__ or cur.__context__
    return found


def redact(text: str, secrets: list[str]) -> str:
    """`text` with every occurrence of each secret replaced by `***`.

    >>> redact("Incorrect API key provided: Bearer sk-abc123.", ["sk-abc123"])
    'Incorrect API key provided: Bearer ***.'
    """
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def _short(text: str, limit: int = 200) -> str:
    """At most `limit` characters (redact first: a cut must not leave part of a key)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"
