"""The durable-queue settings: off unless SIDECAR_QUEUE_PATH is set, each value checked."""

from __future__ import annotations

from datetime import timedelta

import pytest
from bluecore_sidecar.config import ENV_VARS, Settings
from bluecore_sidecar.errors import ConfigError
from datafly.bluecore.v1 import delivery_pb2


def settings(**env: str) -> Settings:
    return Settings.from_env({"BLUECORE_NAMESPACE": "ns-token", **env})


def test_without_a_queue_path_the_sidecar_has_no_queue_and_the_defaults_hold():
    s = settings()
    assert s.queue_path is None
    assert s.delivery_mode == delivery_pb2.DELIVERY_MODE_WAIT
    assert s.queue_retry_cap == timedelta(minutes=5)
    assert (s.queue_max_events, s.queue_max_bytes, s.queue_workers) == (100_000, 256 << 20, 16)


def test_every_queue_variable_is_read(tmp_path):
    s = settings(
        SIDECAR_QUEUE_PATH=str(tmp_path / "q.db"),
        SIDECAR_DELIVERY_MODE="Enqueue",
        SIDECAR_QUEUE_RETRY_CAP="30s",
        SIDECAR_QUEUE_MAX_EVENTS="10",
        SIDECAR_QUEUE_MAX_BYTES="64KiB",
        SIDECAR_QUEUE_WORKERS="2",
    )
    assert s.queue_path == tmp_path / "q.db"
    assert s.delivery_mode == delivery_pb2.DELIVERY_MODE_ENQUEUE
    assert s.queue_retry_cap == timedelta(seconds=30)
    assert (s.queue_max_events, s.queue_max_bytes, s.queue_workers) == (10, 64 << 10, 2)
    for name in ("SIDECAR_QUEUE_PATH", "SIDECAR_DELIVERY_MODE", "SIDECAR_QUEUE_WORKERS"):
        assert name in ENV_VARS


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("SIDECAR_DELIVERY_MODE", "later"),
        ("SIDECAR_QUEUE_RETRY_CAP", "0s"),
        ("SIDECAR_QUEUE_MAX_EVENTS", "0"),
        ("SIDECAR_QUEUE_MAX_BYTES", "12"),
        ("SIDECAR_QUEUE_MAX_BYTES", "1TB"),
        ("SIDECAR_QUEUE_WORKERS", "0"),
    ],
)
def test_a_malformed_queue_value_names_its_variable(variable, value):
    with pytest.raises(ConfigError) as caught:
        settings(**{variable: value})
    assert caught.value.variable == variable


def test_a_queue_path_that_is_a_directory_is_refused(tmp_path):
    with pytest.raises(ConfigError) as caught:
        settings(SIDECAR_QUEUE_PATH=str(tmp_path))
    assert caught.value.variable == "SIDECAR_QUEUE_PATH"
