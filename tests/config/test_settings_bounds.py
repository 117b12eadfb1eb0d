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
