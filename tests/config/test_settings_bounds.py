"""Settings out of their bounds are refused, naming the setting."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from nemo_kernel.config import Settings


@pytest.mark.parametrize("ttl", ["59", "86401", "-1", "five"])
def test_token_ttl_out_of_bounds_is_refused(monkeypatch: pytest.MonkeyPatch, ttl: str) -> None:
    monkeypatch.setenv("NEMO_TOKEN_TTL", ttl)
    with pytest.raises(ValidationError, match="token_ttl"):
        Settings()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("NEMO_HEARTBEAT_TIMEOUT", "inf"),
        ("NEMO_HEARTBEAT_TIMEOUT", "nan"),
        ("NEMO_RECONCILE_INTERVAL", "1e-300"),
        ("NEMO_RECONCILE_INTERVAL", "1e308"),
        ("NEMO_OIDC_INTROSPECTION_CACHE_TTL", "inf"),
        ("NEMO_DRIVER_TIMEOUT", "1e308"),
    ],
)
def test_timing_settings_are_finite_and_bounded(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    # inf or a near-zero interval would make the loops spin or never act (a revocation never taking effect)
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError, match=variable.removeprefix("NEMO_").lower()):
        Settings()


def test_a_replica_user_that_does_not_exist_is_refused_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEMO_REPLICA_USER", "no-such-user-here")
    with pytest.raises(ValidationError, match="replica_user"):
        Settings()


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("NEMO_METRICS_RAW_RETENTION", "inf"),
        ("NEMO_METRICS_RAW_RETENTION", "10"),  # shorter than a rollup's lag: nothing would be rolled up
        ("NEMO_METRICS_RAW_MAX_SAMPLES", "1000000000"),
        ("NEMO_METRICS_ROLLUP_1M_RETENTION", "nan"),
        ("NEMO_METRICS_ROLLUP_1H_RETENTION", "1e308"),
        ("NEMO_METRICS_MAX_SERIES", "1000000000"),  # a clear error, not an out-of-memory later
        ("NEMO_METRICS_FLUSH_INTERVAL", "0"),
    ],
)
def test_metrics_store_settings_are_bounded(monkeypatch: pytest.MonkeyPatch, variable: str, value: str) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError, match=variable.removeprefix("NEMO_").lower()):
        Settings()


def test_metrics_store_defaults() -> None:
    settings = Settings()
    assert settings.metrics_raw_retention == 7200
    assert settings.metrics_max_series == 200_000


@pytest.mark.parametrize("value", ["0", "-1", "10001", "1e3", "eight"])
def test_evacuation_concurrency_is_a_bounded_count(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    # 0 would never drain; an unbounded one would start a migration per replica of a drained cluster at once
    monkeypatch.setenv("NEMO_EVACUATION_CONCURRENCY", value)
    with pytest.raises(ValidationError, match="evacuation_concurrency"):
        Settings()
