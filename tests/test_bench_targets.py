"""The bench report's target table: per-round pairs and the declared steal rule.

Only the arithmetic is tested here (no timing): the figures come from phases made up for
the purpose, shaped like the ones ``bench/run.py`` records.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest

from .conftest import load_bench


@pytest.fixture(scope="module")
def run() -> ModuleType:
    return load_bench("bench_run", "run.py")


def _phase(
    server: str, round_no: int, cpu: float, steal: float = 0.0, **more: Any
) -> dict[str, Any]:
    return {
        "server": server,
        "mode": "deliver",
        "round": round_no,
        "server_cpu_s_per_1k": cpu,
        "deliveries_per_s": 1000.0,
        "p99_ms": 5.0,
        "steal_cores": steal,
        **more,
    }


def test_pairs_compare_each_round_with_its_neighbour(run: ModuleType) -> None:
    # The forwarder's CPU swings between rounds; the sidecar tracks it at 1.1x. A ratio of
    # medians would read 1.0/0.9 = 1.11x only by luck; the per-round pairs say 1.10x each.
    phases = []
    for r, base in enumerate((0.6, 0.9, 0.7, 1.0, 0.8), start=1):
        phases += [_phase("forwarder", r, base), _phase("sidecar", r, base * 1.1)]
    found = run.paired(phases, "deliver", "sidecar", "forwarder", "cpu")
    assert found is not None
    assert found["median"] == pytest.approx(1.1)
    assert (found["used"], found["rounds"], found["clean"]) == (5, 5, 5)


def test_rounds_with_steal_above_the_limit_are_set_aside(run: ModuleType) -> None:
    limit = run.STEAL_LIMIT_CORES
    phases = []
    for r in range(1, 6):
        stalled = r in (2, 4)
        phases.append(_phase("forwarder", r, 1.0))
        # The stalled rounds bill the sidecar for stolen time: 1.6x instead of 1.2x.
        phases.append(_phase("sidecar", r, 1.6 if stalled else 1.2, limit * 2 if stalled else 0))
    found = run.paired(phases, "deliver", "sidecar", "forwarder", "cpu")
    assert found is not None
    assert found["values"] == pytest.approx([1.2, 1.2, 1.2])
    assert (found["used"], found["rounds"]) == (3, 5)


def test_too_few_clean_rounds_use_every_round_and_say_so(run: ModuleType) -> None:
    phases = []
    for r in range(1, 4):
        phases += [_phase("forwarder", r, 1.0, steal=1.0), _phase("sidecar", r, 1.2)]
    table = run.render_targets(phases)
    row = next(line for line in table.splitlines() if line.startswith("| Deliver CPU"))
    assert "| 1.20x |" in row
    assert "3 of 3 (only 0 below the steal limit: all used)" in row
    assert row.endswith("| <= 1.15 | NOT met |")


def test_a_latency_target_subtracts_and_can_be_met(run: ModuleType) -> None:
    phases = []
    for r in range(1, 4):
        phases.append(_phase("forwarder", r, 1.0, mode="latency", p99_ms=10.0 + r))
        phases.append(_phase("sidecar", r, 1.1, mode="latency", p99_ms=11.5 + r))
    table = run.render_targets(phases)
    row = next(line for line in table.splitlines() if line.startswith("| added p99"))
    assert "| +1.50 |" in row
    assert row.endswith("| <= 2 | met |")
    # Only the measured targets get a row.
    assert "Deliver CPU" not in table


def test_no_pairs_no_table(run: ModuleType) -> None:
    assert run.render_targets([_phase("sidecar", 1, 1.0)]) == "no target's servers ran in this run"
