"""When a task retry can help: transient faults only.

`transient` is a Prefect 3 `retry_condition_fn` (called as `(task, task_run, state)` when a task run fails; True
lets the task's `retries` policy go on, False fails it at once):

    @task(retries=2, retry_delay_seconds=[10, 60], retry_condition_fn=transient)

Transient: the DuckDB warehouse file locked by another process or another IO error on it, a write-write conflict;
HTTP 408/429/5xx and connection errors and timeouts (httpx, requests, urllib, the openai SDK of the LLM endpoint,
the MLflow tracking server); `ConnectionError`, `TimeoutError`. An exception raised `from` one of those (e.g.
`WarehouseLockedError`) counts as it. Anything else — a ValueError about a missing eval set, a bad parameter, a
bug — fails at once: a retry would only fail again, later.

The libraries are looked up in `sys.modules` only: an exception of a library that was never imported cannot occur,
so checking never imports one.
"""

from __future__ import annotations

import re
import sys
import urllib.error
from typing import Any

TRANSIENT_HTTP_STATUS = frozenset({408, 429, 500, 502, 503, 504})  # and every other 5xx
_MLFLOW_TRANSIENT_CODES = frozenset(
    {"TEMPORARILY_UNAVAILABLE", "DEADLINE_EXCEEDED", "REQUEST_LIMIT_EXCEEDED"}
)
_MLFLOW_HTTP_STATUS = re.compile(r"failed with error code (\d{3})")
_DUCKDB_PERMANENT = re.compile(r"does not exist|No such file|Permission denied|read-only mode", re.IGNORECASE)


def transient_status(status: Any) -> bool:
    """An HTTP status a retry can outlive: 408, 429, 5xx.

    >>> [s for s in (200, 400, 404, 408, 429, 500, 503, 599) if transient_status(s)]
    [408, 429, 500, 503, 599]
    """
    try:
        status = int(status)
    except (TypeError, ValueError):
        return False
    return status in TRANSIENT_HTTP_STATUS or 500 <= status <= 599


def _module(name: str) -> Any:
    return sys.modules.get(name)


def _duckdb(exc: BaseException) -> bool | None:
    duckdb = _module("duckdb")
    if duckdb is None or not isinstance(exc, duckdb.Error):
        return None
    message = str(exc)
    if isinstance(exc, duckdb.IOException):  # "Could not set lock on file ...", a flaky disk
        return "lock" in message.lower() or not _DUCKDB_PERMANENT.search(message)
    return isinstance(exc, duckdb.TransactionException) and "conflict" in message.lower()


def _httpx(exc: BaseException) -> bool | None:
    httpx = _module("httpx")
    if httpx is None:
        return None
    if isinstance(exc, httpx.HTTPStatusError):
        return transient_status(exc.response.status_code)
    if isinstance(exc, httpx.TimeoutException | httpx.NetworkError | httpx.RemoteProtocolError):
        return True
    return False if isinstance(exc, httpx.HTTPError) else None


def _openai(exc: BaseException) -> bool | None:
    openai = _module("openai")
    if openai is None or not isinstance(exc, openai.OpenAIError):
        return None
    if isinstance(exc, openai.APIConnectionError | openai.RateLimitError | openai.InternalServerError):
        return True  # (APITimeoutError is an APIConnectionError)
    if isinstance(exc, openai.APIStatusError):
        return transient_status(exc.status_code)
    return False


def _requests(exc: BaseException) -> bool | None:
    requests = _module("requests")
    if requests is None or not isinstance(exc, requests.RequestException):
        return None
    if isinstance(exc, requests.exceptions.SSLError):
        return False  # a certificate problem stays
    if isinstance(exc, requests.ConnectionError | requests.Timeout | requests.exceptions.RetryError):
        return True  # (RetryError: urllib3's retries of a 429/5xx ran out, e.g. MLflow's own)
    response = getattr(exc, "response", None)
    return response is not None and transient_status(response.status_code)


def _mlflow(exc: BaseException) -> bool | None:
    exceptions = _module("mlflow.exceptions")
    if exceptions is None or not isinstance(exc, exceptions.MlflowException):
        return None
    if isinstance(exc, exceptions.RestException):  # the tracking server's JSON error
        return transient_status(exc.get_http_status_code())
    if exc.error_code in _MLFLOW_TRANSIENT_CODES:
        return True
    # a non-JSON error page: "API request to endpoint ... failed with error code 502 != 200"
    status = _MLFLOW_HTTP_STATUS.search(str(exc))
    if status:
        return transient_status(status[1])
    # a connection error: raised while handling requests' ConnectionError, its __context__ (is_transient checks it)
    return None


def _builtin(exc: BaseException) -> bool | None:
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    if isinstance(exc, urllib.error.HTTPError):
        return transient_status(exc.code)
    if isinstance(exc, urllib.error.URLError) and isinstance(exc.reason, BaseException):
        return is_transient(exc.reason)
    return None


_CHECKS = (_duckdb, _httpx, _openai, _requests, _mlflow, _builtin)


def is_transient(exc: BaseException | None, _seen: frozenset[int] = frozenset()) -> bool:
    """Whether a retry can outlive `exc` (see the module docstring).

    >>> is_transient(ValueError("no eval set at /x")), is_transient(ConnectionRefusedError())
    (False, True)
    >>> try:
    ...     try:
    ...         raise TimeoutError("read timed out")
    ...     except TimeoutError as err:
    ...         raise RuntimeError("sending the batch failed") from err
    ... except RuntimeError as wrapped:
    ...     is_transient(wrapped)
    True
    """
    if exc is None or id(exc) in _seen:
        return False
    seen = _seen | {id(exc)}
    if isinstance(exc, BaseExceptionGroup):
        return all(is_transient(e, seen) for e in exc.exceptions)
    for check in _CHECKS:
        verdict = check(exc)
        if verdict is not None:
            return verdict
    # `raise Wrapper(...) from exc`; MLflow wraps connection errors implicitly (raises inside `except`)
    if is_transient(exc.__cause__, seen):
        return True
    return _is_mlflow(exc) and not exc.__suppress_context__ and is_transient(exc.__context__, seen)


def _is_mlflow(exc: BaseException) -> bool:
    exceptions = _module("mlflow.exceptions")
    return exceptions is not None and isinstance(exc, exceptions.MlflowException)


def _exception(state: Any) -> BaseException | None:
    """The exception of a Failed state: its data (a task that raised), or a result record holding one."""
    data = getattr(state, "data", None)
    data = getattr(data, "result", data)  # a ResultRecord
    return data if isinstance(data, BaseException) else None


def transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect 3 `retry_condition_fn`: retry the failed `task_run` only when its exception is transient."""
    return is_transient(_exception(state))


__all__ = ["TRANSIENT_HTTP_STATUS", "is_transient", "transient", "transient_status"]
