"""Settings.from_env: defaults, every variable's validation, durations, event map, secrets."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from bluecore_sidecar.config import DEFAULT_API_URL, ENV_VARS, Settings
from bluecore_sidecar.errors import ConfigError

TOKEN = "ns-t0ken-value"


def settings(**env: str) -> Settings:
    return Settings.from_env({"BLUECORE_NAMESPACE": TOKEN, **env})


def test_defaults_match_the_documented_table():
    s = settings()
    assert s.namespace == TOKEN
    assert TOKEN not in repr(s.rules)
    assert s.api_url == DEFAULT_API_URL == "https://api.bluecore.app/api/track/mobile/v1"
    assert s.grpc_address == "127.0.0.1:50051"
    assert s.ops_address == "0.0.0.0:9464"
    assert s.gates.consent_category == "marketing"
    assert s.gates.consent_default is False
    assert s.gates.max_event_age == timedelta(hours=24)
    assert s.rules.product_id_fields == ("product_id", "sku", "id")
    assert dict(s.rules.event_map) == {}
    assert s.rules.customer_attributes == ("first_name", "last_name")
    assert s.max_event_bytes == 65536
    assert s.batch_limit == 500
    assert s.dedup_window == timedelta(hours=24)
    assert s.dedup_max_entries == 100_000
    assert s.dedup_max_bytes == 64 * 1024 * 1024
    assert s.retry.max_attempts == 5
    assert s.retry.base == pytest.approx(0.2)
    assert s.retry.cap == pytest.approx(10.0)
    assert s.retry.attempt_timeout == pytest.approx(5.0)
    assert (s.namespace_file, s.token_check_interval) == (None, timedelta(seconds=5))
    assert s.default_deadline == timedelta(seconds=30)
    assert s.max_concurrency == 64
    assert s.shutdown_grace == timedelta(seconds=20)
    assert s.log_level == "INFO"
    assert s.watch_buffer == 1000
    assert s.retry.max_pause == pytest.approx(60.0)
    assert s.max_inflight_calls == 1000
    assert s.max_watchers == 100


def test_every_variable_is_read():
    """Each documented variable changes the settings (none is silently ignored)."""
    s = settings(
        BLUECORE_API_URL="http://127.0.0.1:8089/api/track/mobile/v1",
        SIDECAR_GRPC_ADDRESS="0.0.0.0:6000",
        SIDECAR_OPS_ADDRESS="127.0.0.1:6001",
        SIDECAR_CONSENT_CATEGORY="advertising",
        SIDECAR_CONSENT_DEFAULT="grant",
        SIDECAR_MAX_EVENT_AGE="2h",
        SIDECAR_PRODUCT_ID_FIELDS="sku, product_id",
        SIDECAR_EVENT_MAP='{"Coupon Applied": "coupon_applied"}',
        SIDECAR_CUSTOMER_ATTRIBUTES="first_name,loyalty_tier",
        SIDECAR_MAX_EVENT_BYTES="1024",
        SIDECAR_BATCH_LIMIT="10",
        SIDECAR_DEDUP_WINDOW="10m",
        SIDECAR_DEDUP_MAX_ENTRIES="50",
        SIDECAR_DEDUP_MAX_BYTES="2MiB",
        SIDECAR_RETRY_MAX_ATTEMPTS="3",
        SIDECAR_RETRY_BASE="100ms",
        SIDECAR_RETRY_CAP="2s",
        SIDECAR_ATTEMPT_TIMEOUT="1s",
        SIDECAR_TOKEN_CHECK_INTERVAL="250ms",
        SIDECAR_DEFAULT_DEADLINE="15s",
        SIDECAR_MAX_CONCURRENCY="8",
        SIDECAR_SHUTDOWN_GRACE="7s",
        SIDECAR_LOG_LEVEL="debug",
        SIDECAR_WATCH_BUFFER="20",
        SIDECAR_MAX_PAUSE="5s",
        SIDECAR_MAX_INFLIGHT_CALLS="50",
        SIDECAR_MAX_WATCHERS="3",
    )
    assert s.api_url == "http://127.0.0.1:8089/api/track/mobile/v1"
    assert (s.grpc_address, s.ops_address) == ("0.0.0.0:6000", "127.0.0.1:6001")
    assert s.gates.consent_category == "advertising"
    assert s.gates.consent_default is True
    assert s.gates.max_event_age == timedelta(hours=2)
    assert s.rules.product_id_fields == ("sku", "product_id")
    assert dict(s.rules.event_map) == {"couponapplied": "coupon_applied"}
    assert s.rules.customer_attributes == ("first_name", "loyalty_tier")
    assert (s.max_event_bytes, s.batch_limit) == (1024, 10)
    assert (s.dedup_window, s.dedup_max_entries) == (timedelta(minutes=10), 50)
    assert s.dedup_max_bytes == 2 * 1024 * 1024
    assert (s.retry.max_attempts, s.retry.base, s.retry.cap) == (3, 0.1, 2.0)
    assert s.retry.attempt_timeout == 1.0
    assert s.token_check_interval == timedelta(milliseconds=250)
    assert s.default_deadline == timedelta(seconds=15)
    assert s.max_concurrency == 8
    assert s.shutdown_grace == timedelta(seconds=7)
    assert s.log_level == "DEBUG"
    assert s.watch_buffer == 20
    assert s.retry.max_pause == pytest.approx(5.0)
    assert s.max_inflight_calls == 50
    assert s.max_watchers == 3


def test_env_vars_lists_every_variable_read():
    assert "BLUECORE_NAMESPACE_FILE" in ENV_VARS
    assert "SIDECAR_EVENT_MAP_FILE" in ENV_VARS
    assert len(set(ENV_VARS)) == len(ENV_VARS)


MALFORMED = [
    ("SIDECAR_MAX_PAUSE", "0s"),
    ("SIDECAR_MAX_WATCHERS", "0"),
    ("BLUECORE_API_URL", "ftp://example.com/x"),
    ("BLUECORE_API_URL", "not a url"),
    ("BLUECORE_API_URL", "https://user:pw@api.bluecore.app/x"),
    ("SIDECAR_GRPC_ADDRESS", "localhost"),
    ("SIDECAR_GRPC_ADDRESS", "127.0.0.1:99999"),
    ("SIDECAR_OPS_ADDRESS", ":9464"),
    ("SIDECAR_CONSENT_CATEGORY", "marketing consent"),
    ("SIDECAR_CONSENT_DEFAULT", "maybe"),
    ("SIDECAR_MAX_EVENT_AGE", "a day"),
    ("SIDECAR_PRODUCT_ID_FIELDS", " , "),
    ("SIDECAR_PRODUCT_ID_FIELDS", "product-id"),
    ("SIDECAR_EVENT_MAP", "{not json"),
    ("SIDECAR_EVENT_MAP", '["a", "b"]'),
    ("SIDECAR_CUSTOMER_ATTRIBUTES", "FirstName"),
    ("SIDECAR_MAX_EVENT_BYTES", "big"),
    ("SIDECAR_MAX_EVENT_BYTES", "10"),
    ("SIDECAR_BATCH_LIMIT", "0"),
    ("SIDECAR_BATCH_LIMIT", "1.5"),
    ("SIDECAR_BATCH_LIMIT", "501"),  # its reply might not fit a default client's 4 MiB
    ("SIDECAR_DEDUP_WINDOW", "-1s"),
    ("SIDECAR_DEDUP_MAX_ENTRIES", "0"),
    ("SIDECAR_DEDUP_MAX_BYTES", "64MB"),
    ("SIDECAR_DEDUP_MAX_BYTES", "1KiB"),
    ("SIDECAR_RETRY_MAX_ATTEMPTS", "five"),
    ("SIDECAR_RETRY_MAX_ATTEMPTS", "0"),
    ("SIDECAR_RETRY_MAX_ATTEMPTS", "101"),
    ("SIDECAR_RETRY_BASE", "0s"),
    ("SIDECAR_RETRY_CAP", "10 minutes"),
    ("SIDECAR_ATTEMPT_TIMEOUT", "0"),
    ("SIDECAR_DEFAULT_DEADLINE", "0ms"),
    ("SIDECAR_MAX_CONCURRENCY", "-4"),
    ("SIDECAR_SHUTDOWN_GRACE", "soon"),
    ("SIDECAR_LOG_LEVEL", "LOUD"),
    ("SIDECAR_WATCH_BUFFER", "0"),
    ("SIDECAR_MAX_WATCHERS", "many"),
]


@pytest.mark.parametrize(("variable", "value"), MALFORMED)
def test_a_malformed_value_is_a_config_error_naming_the_variable(variable, value):
    with pytest.raises(ConfigError) as caught:
        settings(**{variable: value})
    assert caught.value.variable == variable
    assert str(caught.value).startswith(variable + " ")
    assert "\n" not in str(caught.value)


def test_retry_cap_below_base_is_rejected():
    with pytest.raises(ConfigError, match="SIDECAR_RETRY_CAP"):
        settings(SIDECAR_RETRY_BASE="2s", SIDECAR_RETRY_CAP="1s")


def test_empty_values_count_as_unset():
    assert settings(SIDECAR_BATCH_LIMIT="", SIDECAR_LOG_LEVEL="  ").batch_limit == 500


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("250ms", timedelta(milliseconds=250)),
        ("5s", timedelta(seconds=5)),
        ("10m", timedelta(minutes=10)),
        ("24h", timedelta(hours=24)),
        ("90", timedelta(seconds=90)),
        ("1.5", timedelta(seconds=1.5)),
        (" 2 s ", timedelta(seconds=2)),
    ],
)
def test_durations_accept_units_and_bare_seconds(text, expected):
    assert settings(SIDECAR_DEDUP_WINDOW=text).dedup_window == expected


@pytest.mark.parametrize("text", ["5d", "1e3", "-5s", "s", "5 s s"])
def test_durations_reject_other_forms(text):
    with pytest.raises(ConfigError, match="SIDECAR_DEDUP_WINDOW"):
        settings(SIDECAR_DEDUP_WINDOW=text)


def test_event_map_keys_are_normalised_and_null_drops_an_event():
    s = settings(SIDECAR_EVENT_MAP='{"Coupon Applied": "coupon_applied", "Product Viewed": null}')
    assert dict(s.rules.event_map) == {"couponapplied": "coupon_applied", "productviewed": None}


@pytest.mark.parametrize(
    "target", ['"Coupon-Applied"', '"CouponApplied"', '""', "5", "true", '{"a": 1}']
)
def test_event_map_rejects_a_target_that_is_not_a_snake_case_event(target):
    with pytest.raises(ConfigError) as caught:
        settings(SIDECAR_EVENT_MAP=f'{{"Coupon Applied": {target}}}')
    assert caught.value.variable == "SIDECAR_EVENT_MAP"


def test_event_map_rejects_an_empty_key():
    with pytest.raises(ConfigError, match="SIDECAR_EVENT_MAP"):
        settings(SIDECAR_EVENT_MAP='{" - ": "x"}')


def test_event_map_from_a_file(tmp_path):
    """SIDECAR_EVENT_MAP_FILE's JSON object becomes the event map, keys normalised."""
    path = tmp_path / "map.json"
    path.write_text(json.dumps({"Coupon Applied": "coupon_applied"}), encoding="utf-8")
    s = settings(SIDECAR_EVENT_MAP_FILE=str(path))
    assert dict(s.rules.event_map) == {"couponapplied": "coupon_applied"}


def test_event_map_file_errors_name_the_file_variable(tmp_path):
    path = tmp_path / "map.json"
    path.write_text("[]", encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        settings(SIDECAR_EVENT_MAP_FILE=str(path))
    assert caught.value.variable == "SIDECAR_EVENT_MAP_FILE"
    with pytest.raises(ConfigError) as missing:
        settings(SIDECAR_EVENT_MAP_FILE=str(tmp_path / "absent.json"))
    assert missing.value.variable == "SIDECAR_EVENT_MAP_FILE"


def test_event_map_inline_and_file_together_is_an_error(tmp_path):
    path = tmp_path / "map.json"
    path.write_text("{}", encoding="utf-8")
    with pytest.raises(ConfigError, match="SIDECAR_EVENT_MAP"):
        settings(SIDECAR_EVENT_MAP="{}", SIDECAR_EVENT_MAP_FILE=str(path))


def test_namespace_is_required():
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({})
    assert caught.value.variable == "BLUECORE_NAMESPACE"
    assert "BLUECORE_NAMESPACE_FILE" in str(caught.value)


def test_namespace_file_is_read_and_stripped(tmp_path):
    path = tmp_path / "namespace"
    path.write_text(f"  {TOKEN}\n\n", encoding="utf-8")
    s = Settings.from_env({"BLUECORE_NAMESPACE_FILE": str(path)})
    assert s.namespace == TOKEN
    assert s.namespace_file == path  # followed for rotation
    assert TOKEN not in repr(s.rules)


def test_an_empty_namespace_file_is_an_error(tmp_path):
    path = tmp_path / "namespace"
    path.write_text(" \n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"BLUECORE_NAMESPACE_FILE.*empty"):
        Settings.from_env({"BLUECORE_NAMESPACE_FILE": str(path)})


def test_a_missing_namespace_file_is_an_error(tmp_path):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"BLUECORE_NAMESPACE_FILE": str(tmp_path / "absent")})
    assert caught.value.variable == "BLUECORE_NAMESPACE_FILE"
    assert "cannot read" in str(caught.value)


def test_inline_and_file_namespace_together_is_an_error(tmp_path):
    path = tmp_path / "namespace"
    path.write_text(TOKEN, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"BLUECORE_NAMESPACE": TOKEN, "BLUECORE_NAMESPACE_FILE": str(path)})
    assert "BLUECORE_NAMESPACE_FILE" in str(caught.value)
    assert TOKEN not in str(caught.value)


@pytest.mark.parametrize("value", ["two words-s3cr3t", "x" * 257])
def test_a_malformed_namespace_is_rejected_without_echoing_it(value, tmp_path):
    with pytest.raises(ConfigError) as caught:
        Settings.from_env({"BLUECORE_NAMESPACE": value})
    assert "s3cr3t" not in str(caught.value)
    assert "x" * 20 not in str(caught.value)
    path = tmp_path / "namespace"
    path.write_text(value, encoding="utf-8")
    with pytest.raises(ConfigError) as from_file:
        Settings.from_env({"BLUECORE_NAMESPACE_FILE": str(path)})
    assert from_file.value.variable == "BLUECORE_NAMESPACE_FILE"
    assert "s3cr3t" not in str(from_file.value)


def test_the_namespace_never_shows_in_the_settings_repr():
    assert TOKEN not in repr(settings())


@pytest.mark.parametrize("name", ["SIDECAR_MAX_PAUSE", "SIDECAR_TOKEN_CHECK_INTERVAL"])
@pytest.mark.parametrize("value", ["0", "soon", "-1s"])
def test_pause_cap_and_token_check_must_be_positive_durations(name, value):
    with pytest.raises(ConfigError) as caught:
        settings(**{name: value})
    assert caught.value.variable == name


def test_an_allow_listed_attribute_name_over_128_characters_is_rejected():
    with pytest.raises(ConfigError) as caught:
        settings(SIDECAR_CUSTOMER_ATTRIBUTES="a" * 129)
    assert caught.value.variable == "SIDECAR_CUSTOMER_ATTRIBUTES"
