"""Adds up the Prometheus metrics of several worker processes into one exposition (*pure*).

The supervisor of ``SIDECAR_WORKERS`` scrapes each worker's private ``/metrics`` and serves
the sum: counters and histograms (buckets, ``_count``, ``_sum``) add up, ``_created``
timestamps take the earliest, and gauges add up (calls in flight, say) except
:data:`LARGEST_GAUGES`, which take the largest. A worker that died leaves its last
counts behind as :class:`Totals`, so that a sum never goes down when a worker is replaced.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

#: Gauges whose sum would mean nothing. The durable queue's lives in one file that every
#: worker opens and reports whole (a sum would multiply it by N). The pause after a
#: Retry-After is each worker's own, and the pod waits as long as the longest one.
LARGEST_GAUGES = frozenset(
    {
        "bluecore_sidecar_queue_depth",
        "bluecore_sidecar_queue_bytes",
        "bluecore_sidecar_queue_oldest_age_seconds",
        "bluecore_sidecar_dead_letters",
        "bluecore_sidecar_upstream_pause_seconds",
    }
)
#: Families whose samples only ever grow while their process lives.
_MONOTONIC = frozenset({"counter", "histogram", "summary"})

SampleKey = tuple[str, tuple[tuple[str, str], ...]]


@dataclasses.dataclass(slots=True)
class Family:
    """One metric family: its type, help text and samples keyed by (name, sorted labels)."""

    kind: str
    help: str
    samples: dict[SampleKey, float] = dataclasses.field(default_factory=dict)


Totals = dict[str, Family]
"""Families by name, as parsed from one exposition or as a running sum."""


def parse(text: str) -> Totals:
    """The families of one Prometheus text exposition."""
    families: Totals = {}
    for parsed in text_string_to_metric_families(text):
        family = families.setdefault(parsed.name, Family(parsed.type, parsed.documentation))
        for sample in parsed.samples:
            key = (sample.name, tuple(sorted(sample.labels.items())))
            family.samples[key] = float(sample.value)
    return families


def monotonic(families: Totals) -> Totals:
    """Only what may be carried over after its process ended: counts, not gauges or times."""
    kept: Totals = {}
    for name, family in families.items():
        if family.kind not in _MONOTONIC:
            continue
        samples = {k: v for k, v in family.samples.items() if not k[0].endswith("_created")}
        kept[name] = Family(family.kind, family.help, samples)
    return kept


def merge(parts: Iterable[Totals]) -> Totals:
    """Combine the families of several processes by the rules in the module docstring."""
    merged: Totals = {}
    for part in parts:
        for name, family in part.items():
            into = merged.get(name)
            if into is None:
                merged[name] = Family(family.kind, family.help, dict(family.samples))
                continue
            for key, value in family.samples.items():
                if key not in into.samples:
                    into.samples[key] = value
                elif key[0].endswith("_created"):
                    into.samples[key] = min(into.samples[key], value)
                elif into.kind == "gauge" and name in LARGEST_GAUGES:
                    into.samples[key] = max(into.samples[key], value)
                else:
                    into.samples[key] += value
    return merged


def render(families: Totals) -> bytes:
    """The Prometheus text exposition of ``families``."""
    registry = CollectorRegistry()
    registry.register(_Fixed(families))
    return generate_latest(registry)


class _Fixed(Collector):
    """Hands prometheus_client's writer a fixed set of families."""

    def __init__(self, families: Totals) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        for name, family in sorted(self._families.items()):
            metric = Metric(name, family.help, family.kind)
            # In the order first seen: a histogram's buckets stay in ascending `le` order.
            for (sample_name, labels), value in family.samples.items():
                metric.add_sample(sample_name, dict(labels), value)
            yield metric


__all__ = ["LARGEST_GAUGES", "Family", "Totals", "merge", "monotonic", "parse", "render"]
