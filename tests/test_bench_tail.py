"""The bench's latency pairs, tail probe and pinning: arithmetic and wiring, no timing."""

from __future__ import annotations

import argparse
import gc
from types import ModuleType
from typing import Any

import pytest

from .conftest import load_bench


@pytest.fixture(scope="module")
def run() -> ModuleType:
    return load_bench("bench_run_tail", "run.py")


@pytest.fixture(scope="module")
def tailprobe() -> ModuleType:
    return load_bench("bench_tailprobe", "tailprobe.py")


def _latency(server: str, round_no: int, p99: float, steal: float = 0.0, **more: Any) -> dict:
    return {
        "server": server,
        "mode": "latency",
        "round": round_no,
        "p99_ms": p99,
        "steal_cores": steal,
        "t_began": 100.0 * round_no,
        "t_ended": 100.0 * round_no + 3.0,
        **more,
    }


def test_every_latency_round_is_listed_and_stolen_ones_are_marked(run: ModuleType) -> None:
    phases = []
    for r, (fwd, side, steal) in enumerate(
        ((5.0, 6.0, 0.0), (40.0, 12.0, 0.3), (6.0, 7.5, 0.0), (5.5, 6.5, 0.0)), start=1
    ):
        phases += [_latency("forwarder", r, fwd, steal), _latency("sidecar", r, side)]
    text = run.render_latency_rounds(phases)
    rows = [line for line in text.splitlines() if line.startswith("| ") and "round" not in line]
    assert len(rows) == 4
    assert "yes: steal" in rows[1]
    assert "-28.00" in rows[1]  # shown, though not used
    # The median is over rounds 1, 3 and 4: +1.0, +1.5, +1.0.
    assert "+1.00 ms over 3 of 4 rounds" in text
    assert "1 round(s) had more than" in text


def test_no_latency_pairs_no_table(run: ModuleType) -> None:
    assert run.render_latency_rounds([_latency("forwarder", 1, 5.0)]) == ""


def test_tail_probe_counts_only_samples_inside_the_sidecars_latency_phases(
    run: ModuleType,
) -> None:
    phases = [_latency("sidecar", 1, 6.0), _latency("forwarder", 2, 5.0)]
    probe = {
        # Round 1 of the sidecar runs from t=100 to t=103.
        "lag_ms": [[101.0, 0.1], [101.5, 3.0], [102.0, 25.0], [150.0, 99.0], [201.0, 50.0]],
        "gc_ms": {"0": [[101.0, 0.2]], "1": [], "2": [[102.5, 12.0], [10.0, 80.0]]},
    }
    text = run.render_tail_probe(probe, phases)
    lines = {line.split(" | ")[0]: line for line in text.splitlines()}
    assert lines["| loop lag"].endswith("| 3 | 1 | 0 | 0 | 1 | 0 | 0 | 1 | 25.00 |")
    assert lines["| GC gen 2 pause"].endswith("| 1 | 0 | 0 | 0 | 0 | 0 | 1 | 0 | 12.00 |")
    assert lines["| GC gen 1 pause"].endswith("| 0 | 0 | 0 | 0 | 0 | 0 | 0 | 0 | - |")


def test_no_sidecar_latency_phase_no_tail_section(run: ModuleType) -> None:
    assert run.render_tail_probe({"lag_ms": [], "gc_ms": {}}, []) == ""


def test_buckets_put_each_value_under_its_upper_bound(run: ModuleType) -> None:
    assert run._buckets([0.0, 0.5, 1.99, 2.0, 19.9, 20.0, 1e6]) == [1, 1, 1, 1, 0, 1, 2]


def test_pin_prefixes_taskset_only_when_asked(run: ModuleType) -> None:
    cmd = ["python", "x.py"]
    assert run.pinned(argparse.Namespace(pin=False), 1, cmd) == cmd
    assert run.pinned(argparse.Namespace(pin=True), 1, cmd) == ["taskset", "-c", "1", *cmd]


def test_summary_rows_carry_the_paired_ratio_beside_the_ratio_of_medians(
    run: ModuleType,
) -> None:
    # Per round the sidecar costs 1.2x the forwarder; the medians pair a quiet forwarder
    # round (0.5) with a stalled sidecar one, and their ratio says otherwise.
    phases = []
    for r, (fwd, side) in enumerate(((0.5, 0.6), (1.0, 1.2), (0.9, 1.08)), start=1):
        for name, cpu in (("forwarder", fwd), ("sidecar", side)):
            phases.append(
                {
                    "server": name,
                    "mode": "deliver",
                    "round": r,
                    "events": 1000,
                    "server_cpu_s_per_1k": cpu,
                    "deliveries_per_s": 1000.0,
                    "p50_ms": 1.0,
                    "p99_ms": 5.0,
                    "upstream_cpu_s_per_1k": 0.0,
                    "loadgen_cpu_s_per_1k": 0.0,
                    "server_cores": 1.0,
                    "other_load_cores": 0.0,
                    "steal_cores": 0.0,
                    "not_delivered": 0,
                }
            )
    rows = run.summarise(phases, ["forwarder", "sidecar"])
    sidecar = next(r for r in rows if r["server"] == "sidecar")
    assert sidecar["cpu_vs_ref"] == pytest.approx(1.08 / 0.9)
    assert sidecar["cpu_vs_ref_paired"] == pytest.approx(1.2)
    table = run.render_table(rows, 20)
    assert "| 1.20x | 0 |" in table


def test_the_probe_times_collections_by_generation(tailprobe: ModuleType) -> None:
    probe = tailprobe.Probe()
    gc.callbacks.append(probe.on_gc)
    try:
        gc.collect()
    finally:
        gc.callbacks.remove(probe.on_gc)
    report = probe.report()
    assert len(report["gc_ms"]["2"]) == 1
    ended, took = report["gc_ms"]["2"][0]
    assert took >= 0.0
    assert ended >= probe.started
    assert report["lag_ms"] == []
