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
