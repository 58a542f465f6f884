"""Per-run caps on requests, tokens and cost, and the cost accounting that goes with them.

With several requests in flight, their token counts are unknown until they return. A request is only sent
if the cap would hold even in its worst case (estimated prompt tokens + `max_tokens`), so a run stops
*before* a cap, never after it; the reservation is replaced by the real counts when the response arrives.
Cached responses cost nothing and are not counted against the caps.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

from synth.config import BudgetConfig


def estimate_prompt_tokens(messages: list[dict[str, str]]) -> int:
    """A deliberately high estimate of prompt tokens: ~3 chars/token for alphabetic scripts, 1 per CJK char.

    >>> estimate_prompt_tokens([{"role": "user", "content": "abc" * 10}])
    18
    """
    total = 0
    for m in messages:
        text = m.get("content", "")
        wide = sum(1 for ch in text if ord(ch) >= 0x2E80)
        total += wide + math.ceil((len(text) - wide) / 3) + 8  # 8: role and template tokens per message
    return total


@dataclass
class Usage:
    """What a run spent on new (uncached) requests."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Budget:
    """Thread-safe reservation of requests/tokens/cost against the caps of one run."""

    def __init__(self, config: BudgetConfig) -> None:
        self.config = config
        self.used = Usage()
        self._reserved_requests = 0
        self._reserved_tokens = 0
        self._reserved_cost = 0.0
        self._lock = threading.Lock()

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        """USD for the given token counts at the configured prices.

        >>> Budget(BudgetConfig(price_input_per_m=0.15, price_output_per_m=0.60)).cost(1_000_000, 500_000)
        0.45
        """
        c = self.config
        return (prompt_tokens * c.price_input_per_m + completion_tokens * c.price_output_per_m) / 1e6

    def reserve(self, est_prompt_tokens: int, max_completion_tokens: int) -> str | None:
        """Reserve a request's worst case. Returns None on success, else which cap would be exceeded."""
        c = self.config
        worst_tokens = est_prompt_tokens + max_completion_tokens
        worst_cost = self.cost(est_prompt_tokens, max_completion_tokens)
        with self._lock:
            if (
                c.max_requests is not None
                and self.used.requests + self._reserved_requests + 1 > c.max_requests
            ):
                return f"request cap ({c.max_requests})"
            if (
                c.max_tokens is not None
                and self.used.tokens + self._reserved_tokens + worst_tokens > c.max_tokens
            ):
                return f"token cap ({c.max_tokens})"
            if (
                c.max_cost_usd is not None
                and self.used.cost_usd + self._reserved_cost + worst_cost > c.max_cost_usd + 1e-12
            ):
                return f"cost cap (${c.max_cost_usd:g})"
            self._reserved_requests += 1
            self._reserved_tokens += worst_tokens
            self._reserved_cost += worst_cost
        return None

    def settle(
        self, est_prompt_tokens: int, max_completion_tokens: int, prompt_tokens: int, completion_tokens: int
    ) -> None:
        """Replace a reservation by what the request really used (a failed request still counts as sent)."""
        with self._lock:
            self._reserved_requests -= 1
            self._reserved_tokens -= est_prompt_tokens + max_completion_tokens
            self._reserved_cost -= self.cost(est_prompt_tokens, max_completion_tokens)
            self.used.requests += 1
            self.used.prompt_tokens += prompt_tokens
            self.used.completion_tokens += completion_tokens
            self.used.cost_usd += self.cost(prompt_tokens, completion_tokens)


@dataclass(frozen=True)
class CostProjection:
    """Projected spend for `n` queries from measured mean token counts."""

    n: int
    prompt_tokens: float  # mean per request
    completion_tokens: float
    acceptance: float  # accepted / decided
    cost_per_n_requests: float
    cost_per_n_accepted: float


def project_cost(
    n: int, mean_prompt_tokens: float, mean_completion_tokens: float, acceptance: float, config: BudgetConfig
) -> CostProjection:
    """Cost of `n` requests and of `n` *accepted* queries (requests / acceptance rate) at the configured prices.

    >>> p = project_cost(1000, 400, 40, 0.5, BudgetConfig(price_input_per_m=0.15, price_output_per_m=0.60))
    >>> round(p.cost_per_n_requests, 4), round(p.cost_per_n_accepted, 4)
    (0.084, 0.168)
    """
    per_request = (
        Budget(config).cost(1, 0) * mean_prompt_tokens + Budget(config).cost(0, 1) * mean_completion_tokens
    )
    per_accepted = per_request / acceptance if acceptance > 0 else math.inf
    return CostProjection(
        n, mean_prompt_tokens, mean_completion_tokens, acceptance, n * per_request, n * per_accepted
    )
