"""Prometheus metrics on the ops address, scraped over HTTP like Prometheus does."""

from __future__ import annotations

import asyncio
import re

import aiohttp
import pytest
from bluecore_sidecar.telemetry import LoopCounter, LoopHistogram
from datafly.bluecore.v1 import delivery_pb2
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from .conftest import EMAIL, NAMESPACE, deliver, eventually, make_event

Status = delivery_pb2.DeliveryStatus


async def scrape(ops_url: str) -> tuple[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]]:
    """The raw exposition text and every sample as {(name, sorted labels): value}."""
    async with aiohttp.ClientSession() as session, session.get(f"{ops_url}/metrics") as response:
        assert response.status == 200
        assert response.content_type == "text/plain"
        text = await response.text()
    samples = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    return text, samples


async def test_metrics_count_outcomes_upstream_codes_retries_and_dedup(sidecar, stub, sandbox):
    sandbox.fail_next(1, 503)
    first = await stub.Deliver(delivery_pb2.DeliverRequest(event=make_event()), timeout=10)
    again = await stub.Deliver(delivery_pb2.DeliverRequest(event=make_event()), timeout=10)
    sandbox.fail_next(1, 400)
    refused = await stub.Deliver(
        delivery_pb2.DeliverRequest(event=make_event(messageId="m-2")), timeout=10
    )
    skipped = await stub.Deliver(
        delivery_pb2.DeliverRequest(
            event=make_event(messageId="m-3", context={"consent": {"marketing": False}})
        ),
        timeout=10,
    )
    assert [r.result.status for r in (first, again, refused, skipped)] == [
        Status.DELIVERY_STATUS_DELIVERED,
        Status.DELIVERY_STATUS_SKIPPED_DUPLICATE,
        Status.DELIVERY_STATUS_FAILED_PERMANENT,
        Status.DELIVERY_STATUS_SKIPPED_NO_CONSENT,
    ]

    text, samples = await scrape(sidecar.ops_url)

    def deliveries(status: str, event: str) -> float:
        key = (("bluecore_event", event), ("status", status))
        return samples[("bluecore_sidecar_deliveries_total", key)]

    assert deliveries("DELIVERED", "viewed_product") == 1
    assert deliveries("SKIPPED_DUPLICATE", "viewed_product") == 1
    assert deliveries("FAILED_PERMANENT", "viewed_product") == 1
    assert deliveries("SKIPPED_NO_CONSENT", "viewed_product") == 1
    responses = "bluecore_sidecar_upstream_responses_total"
    assert samples[(responses, (("code", "503"),))] == 1
    assert samples[(responses, (("code", "202"),))] == 1
    assert samples[(responses, (("code", "400"),))] == 1
    assert samples[("bluecore_sidecar_upstream_retries_total", ())] == 1
    assert samples[("bluecore_sidecar_dedup_hits_total", ())] == 1
    assert samples[("bluecore_sidecar_deliveries_in_flight", ())] == 0
    latency = "bluecore_sidecar_delivery_latency_seconds_count"
    assert samples[(latency, (("status", "DELIVERED"),))] == 1
    assert sum(v for (name, _), v in samples.items() if name == latency) == 4
    assert NAMESPACE not in text
    assert EMAIL not in text


async def test_in_flight_gauge_counts_deliveries_waiting_on_bluecore(sidecar, stub, sandbox):
    """A delivery held up by a slow Bluecore shows as in flight until it finishes."""
    sandbox.delay(30, count=1)
    call = asyncio.ensure_future(
        stub.Deliver(delivery_pb2.DeliverRequest(event=make_event()), timeout=20)
    )
    gauge = ("bluecore_sidecar_deliveries_in_flight", ())

    async def in_flight() -> bool:
        _, samples = await scrape(sidecar.ops_url)
        return samples[gauge] == 1

    await eventually(in_flight, timeout=10, interval=0.02)
    await sandbox.stop()  # releases the held answer (202)
    reply = await call
    assert reply.result.status == Status.DELIVERY_STATUS_DELIVERED
    _, samples = await scrape(sidecar.ops_url)
    assert samples[gauge] == 0


async def test_metrics_count_outcomes_by_status(sidecar, stub):
    await deliver(stub, make_event())
    async with aiohttp.ClientSession() as http, http.get(sidecar.ops_url + "/metrics") as response:
        text = await response.text()
    assert response.status == 200
    assert (
        'bluecore_sidecar_deliveries_total{bluecore_event="viewed_product",status="DELIVERED"}'
        in text
    )


async def test_a_batch_counts_every_outcome_and_dedup_hit(sidecar, stub):
    """The batch's counters are added to once per batch; the totals are the same as one by one."""
    events = [
        make_event(messageId="bm-1"),
        make_event(messageId="bm-2"),
        make_event(messageId="bm-1"),  # a duplicate within the batch
        make_event(messageId="bm-3", context={"consent": {"marketing": False}}),
    ]
    reply = await stub.DeliverBatch(delivery_pb2.DeliverBatchRequest(events=events), timeout=10)
    again = await stub.DeliverBatch(
        delivery_pb2.DeliverBatchRequest(events=[make_event(messageId="bm-2")]), timeout=10
    )
    assert [r.status for r in reply.results] == [
        Status.DELIVERY_STATUS_DELIVERED,
        Status.DELIVERY_STATUS_DELIVERED,
        Status.DELIVERY_STATUS_SKIPPED_DUPLICATE,
        Status.DELIVERY_STATUS_SKIPPED_NO_CONSENT,
    ]
    assert again.results[0].status == Status.DELIVERY_STATUS_SKIPPED_DUPLICATE

    _, samples = await scrape(sidecar.ops_url)

    def deliveries(status: str) -> float:
        key = (("bluecore_event", "viewed_product"), ("status", status))
        return samples[("bluecore_sidecar_deliveries_total", key)]

    assert deliveries("DELIVERED") == 2
    assert deliveries("SKIPPED_DUPLICATE") == 2
    assert deliveries("SKIPPED_NO_CONSENT") == 1
    assert samples[("bluecore_sidecar_dedup_hits_total", ())] == 2
    latency = "bluecore_sidecar_delivery_latency_seconds_count"
    assert sum(v for (name, _), v in samples.items() if name == latency) == 5


def _without_created(text: str) -> str:
    """An exposition with the ``_created`` timestamps (made at different moments) masked."""
    return re.sub(r"(_created(\{[^}]*\})?) \S+", r"\1 T", text)


def test_loop_metrics_are_exposed_as_prometheus_clients_own_classes_would_be():
    """Same families, names, labels, values, bucket bounds and order as Counter/Histogram."""
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    buckets = (0.005, 0.1, 1, 30)
    pairs = [
        (
            LoopCounter("c_labelled", "Labelled.", ["status", "event"], registry=ours),
            Counter("c_labelled", "Labelled.", ["status", "event"], registry=theirs),
        ),
        (
            LoopCounter("c_plain", "Plain.", registry=ours),
            Counter("c_plain", "Plain.", registry=theirs),
        ),
        (
            LoopHistogram("h_seconds", "Hist.", ["status"], buckets=buckets, registry=ours),
            Histogram("h_seconds", "Hist.", ["status"], buckets=buckets, registry=theirs),
        ),
    ]
    for labelled, plain, histogram in [tuple(pair[i] for pair in pairs) for i in range(2)]:
        labelled.labels(status="DELIVERED", event="purchase").inc()
        labelled.labels(status="DELIVERED", event="purchase").inc(2.5)
        labelled.labels(status="FAILED", event="search")
        plain.inc()
        plain.inc(4)
        for amount in (0.001, 0.005, 0.2, 30, 99):
            histogram.labels(status="DELIVERED").observe(amount)
        histogram.labels(status="SKIPPED").observe(0.05)
    assert _without_created(generate_latest(ours).decode()) == _without_created(
        generate_latest(theirs).decode()
    )
    assert ours.get_sample_value(
        "c_labelled_total", {"status": "DELIVERED", "event": "purchase"}
    ) == pytest.approx(3.5)


def test_loop_metrics_refuse_wrong_labels_and_unsorted_buckets():
    registry = CollectorRegistry()
    counter = LoopCounter("c", "C.", ["status"], registry=registry)
    with pytest.raises(ValueError, match="status"):
        counter.labels(code="1")
    with pytest.raises(ValueError, match="increasing"):
        LoopHistogram("h", "H.", buckets=(1, 0.5), registry=registry)
    with pytest.raises(ValueError, match="Duplicated"):
        LoopCounter("c", "Again.", registry=registry)
