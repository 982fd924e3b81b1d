"""Pure retry policy: how hard to try, what an answer means, how long to wait.

Nothing here does I/O or reads a clock of its own: the upstream client feeds in statuses,
headers and times, and gets verdicts and delays back. Tested without sockets or sleeping.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

#: Statuses Bluecore may answer that are worth another try.
RETRYABLE_STATUSES: frozenset[int] = frozenset({408, 425, 429, *range(500, 600)})

#: Share of a call's budget kept back to build and return the answer, and its bounds (s).
MARGIN_FRACTION = 0.1
MIN_MARGIN = 0.05
MAX_MARGIN = 1.0

#: A try with less time than this left is not started: it could only time out.
MIN_TRY_SECONDS = 0.01

# Delta-seconds longer than this many digits are absurd; they are read as "very long" instead
# of being converted (a 400-digit header must not cost an overflow or a big-int parse).
_MAX_DIGITS = 10


class Verdict(enum.Enum):
    """What one HTTP answer means for the event."""

    DELIVERED = "delivered"
    RETRY = "retry"
    PERMANENT = "permanent"


@dataclasses.dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard to try. Delays are in seconds; ``max_attempts`` counts the first try.

    ``cap`` bounds our own exponential backoff; ``max_pause`` bounds how long one
    ``Retry-After`` may hold a request (and, through the shared pause, every request) back.
    """

    max_attempts: int = 5
    base: float = 0.2
    cap: float = 10.0
    attempt_timeout: float = 5.0
    retryable_statuses: frozenset[int] = RETRYABLE_STATUSES
    max_pause: float = 60.0


def classify(status: int, policy: RetryPolicy) -> Verdict:
    """Classify an HTTP status: any 2xx is accepted, listed codes are retried, the rest fail."""
    if 200 <= status < 300:
        return Verdict.DELIVERED
    if status in policy.retryable_statuses:
        return Verdict.RETRY
    return Verdict.PERMANENT


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date), if valid.

    Never raises: absurdly long numbers and far-future dates come back as large finite
    values for the policy's ``max_pause`` to cap; garbage comes back as ``None``.
    """
    if value is None:
        return None
    text = value.strip()
    # isdigit() alone accepts "²" (float() then raises) and other scripts' digits.
    if text.isascii() and text.isdigit():
        digits = text.lstrip("0") or "0"
        if len(digits) > _MAX_DIGITS:
            return float(10**_MAX_DIGITS)
        return float(digits)
    try:
        when = parsedate_to_datetime(text)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - now).total_seconds()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return max(0.0, seconds) if math.isfinite(seconds) else None


def backoff_delay(
    policy: RetryPolicy, attempt: int, retry_after: float | None, rand: Callable[[], float]
) -> float:
    """Delay before try ``attempt + 1``: capped exponential backoff with full jitter.

    ``Retry-After`` is a floor (Bluecore's own word is never undercut by jitter), itself
    capped at ``policy.max_pause``.
    """
    # min() before the power would still build 2**attempt; the exponent is bounded instead.
    exponent = min(max(attempt - 1, 0), 64)
    ceiling = min(policy.cap, policy.base * (2.0**exponent))
    delay: float = ceiling * rand()
    if retry_after is not None:
        delay = max(delay, min(retry_after, policy.max_pause))
    return delay


def deadline_margin(budget: float) -> float:
    """Time kept back from a call with ``budget`` seconds to answer before its deadline.

    A fixed margin is too thin for long calls on a busy machine and too fat for short ones;
    a share of the budget, bounded both ways, holds up under CPU load.
    """
    return min(MAX_MARGIN, max(MIN_MARGIN, budget * MARGIN_FRACTION))


class Throttle:
    """Shared slow-down: a 429 (or Retry-After on a 503) pauses every later request.

    Bluecore's rate limit is per namespace, not per event, so one event's 429 means every
    request sent now would get one too. Each request waits until the pause is over.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._resume_at = 0.0

    def pause_for(self, seconds: float) -> None:
        """Hold later requests back for ``seconds`` from now (extends, never shortens)."""
        self._resume_at = max(self._resume_at, self._clock() + seconds)

    def wait_time(self) -> float:
        """Seconds a request must wait before it may be sent."""
        return max(0.0, self._resume_at - self._clock())
