"""The pure retry decisions of retry.py: classification, Retry-After parsing and backoff."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from bluecore_sidecar.retry import (
    MARGIN_FRACTION,
    MAX_MARGIN,
    MIN_MARGIN,
    RetryPolicy,
    Throttle,
    Verdict,
    backoff_delay,
    classify,
    deadline_margin,
    parse_retry_after,
)

POLICY = RetryPolicy(max_attempts=5, base=0.2, cap=10.0)
NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_any_2xx_is_delivered(status):
    assert classify(status, POLICY) is Verdict.DELIVERED


@pytest.mark.parametrize("status", [408, 425, 429, 500, 502, 503, 504, 599])
def test_timeouts_rate_limits_and_5xx_are_retried(status):
    assert classify(status, POLICY) is Verdict.RETRY


@pytest.mark.parametrize("status", [300, 400, 401, 403, 404, 409, 413, 415, 422])
def test_other_statuses_are_permanent(status):
    assert classify(status, POLICY) is Verdict.PERMANENT


def test_retryable_statuses_are_policy_data():
    """A policy that lists only 503 treats 429 as permanent."""
    policy = RetryPolicy(retryable_statuses=frozenset({503}))
    assert classify(429, policy) is Verdict.PERMANENT
    assert classify(503, policy) is Verdict.RETRY


@pytest.mark.parametrize(("header", "seconds"), [("1", 1.0), ("0", 0.0), (" 120 ", 120.0)])
def test_retry_after_in_seconds(header, seconds):
    """A Retry-After of delay-seconds (blanks trimmed) is that many seconds."""
    assert parse_retry_after(header, NOW) == seconds


def test_retry_after_as_http_date_is_seconds_from_now():
    header = format_datetime(NOW + timedelta(seconds=7), usegmt=True)
    assert parse_retry_after(header, NOW) == pytest.approx(7.0)


def test_retry_after_http_date_in_the_past_means_no_wait():
    header = format_datetime(NOW - timedelta(minutes=5), usegmt=True)
    assert parse_retry_after(header, NOW) == 0.0


@pytest.mark.parametrize(
    "header", [None, "", "   ", "soon", "-1", "1.5", "Tue, 99 Foo 2026", "\u00b2", "\u0661"]
)
def test_garbage_retry_after_is_ignored(header):
    """Anything that is neither delta-seconds nor an HTTP date counts as no Retry-After."""
    assert parse_retry_after(header, NOW) is None


@pytest.mark.parametrize(
    "header",
    [
        "9" * 400,
        "9" * 5000,
        "99999999999",
        "Fri, 31 Dec 9999 23:59:59 GMT",
        "Fri, 31 Dec 9999 23:59:59 -2359",
    ],
)
def test_absurd_retry_after_values_are_large_and_finite_never_an_error(header):
    seconds = parse_retry_after(header, NOW)
    assert seconds is not None
    assert 1e8 < seconds < float("inf")


def test_max_pause_caps_retry_after_but_not_below_the_jitter():
    policy = RetryPolicy(base=0.2, cap=10.0, max_pause=60.0)
    assert backoff_delay(policy, 1, 1e10, lambda: 1.0) == 60.0
    assert backoff_delay(policy, 1, 59.0, lambda: 1.0) == 59.0
    assert backoff_delay(policy, 1000, None, lambda: 1.0) == pytest.approx(10.0)


def test_the_deadline_margin_scales_with_the_budget_within_bounds():
    assert deadline_margin(0.2) == MIN_MARGIN
    assert deadline_margin(5.0) == pytest.approx(5.0 * MARGIN_FRACTION)
    assert deadline_margin(3600.0) == MAX_MARGIN
    assert deadline_margin(1.0) > 0.05  # more than the old fixed margin


def test_backoff_is_full_jitter_over_an_exponential_ceiling():
    """rand() scales the whole ceiling base * 2**(attempt-1), from 0 up to it."""
    assert backoff_delay(POLICY, 1, None, lambda: 0.0) == 0.0
    assert backoff_delay(POLICY, 1, None, lambda: 1.0) == pytest.approx(0.2)
    assert backoff_delay(POLICY, 2, None, lambda: 1.0) == pytest.approx(0.4)
    assert backoff_delay(POLICY, 3, None, lambda: 0.5) == pytest.approx(0.4)
    assert backoff_delay(POLICY, 4, None, lambda: 1.0) == pytest.approx(1.6)


def test_backoff_is_capped():
    assert backoff_delay(POLICY, 20, None, lambda: 1.0) == pytest.approx(10.0)
    assert backoff_delay(POLICY, 100, None, lambda: 0.5) == pytest.approx(5.0)


def test_retry_after_is_a_floor_for_the_backoff():
    """Jitter never undercuts Bluecore's Retry-After, and a longer jitter is kept."""
    assert backoff_delay(POLICY, 1, 3.0, lambda: 0.0) == 3.0
    assert backoff_delay(POLICY, 1, 3.0, lambda: 1.0) == 3.0
    assert backoff_delay(POLICY, 6, 1.0, lambda: 1.0) == pytest.approx(6.4)


def test_retry_after_may_exceed_the_cap():
    """The cap bounds our own backoff, not how long Bluecore asks us to wait."""
    assert backoff_delay(POLICY, 1, 30.0, lambda: 1.0) == 30.0


def test_throttle_pause_extends_but_never_shortens():
    now = [100.0]
    throttle = Throttle(clock=lambda: now[0])
    assert throttle.wait_time() == 0.0
    throttle.pause_for(2.0)
    throttle.pause_for(0.5)
    assert throttle.wait_time() == pytest.approx(2.0)
    now[0] = 101.5
    assert throttle.wait_time() == pytest.approx(0.5)
    now[0] = 103.0
    assert throttle.wait_time() == 0.0
