"""The suite's one poller, ``eventually``: it returns the first truthy value of a plain or async
predicate, and fails, naming what it waited for, when the time is up."""

from __future__ import annotations

import pytest

from .conftest import eventually


async def test_returns_the_first_truthy_value_of_a_plain_predicate():
    calls: list[int] = []

    def third_time() -> list[int]:
        calls.append(len(calls))
        return calls if len(calls) == 3 else []

    assert await eventually(third_time, timeout=2, interval=0) == [0, 1, 2]


async def test_awaits_an_async_predicate():
    seen = 0

    async def counted() -> int:
        nonlocal seen
        seen += 1
        return seen if seen >= 2 else 0

    assert await eventually(counted, timeout=2, interval=0) == 2


async def test_times_out_naming_what_it_waited_for_and_the_last_value():
    with pytest.raises(AssertionError, match=r"not true within 0\.05 s: the record \(last: \[\]\)"):
        await eventually(list, timeout=0.05, interval=0.01, what="the record")


async def test_an_exception_in_the_predicate_fails_at_once():
    def broken() -> bool:
        raise KeyError("gauge")

    with pytest.raises(KeyError, match="gauge"):
        await eventually(broken, timeout=60)
