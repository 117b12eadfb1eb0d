"""NEMO_PROMETHEUS_URL: an http(s) URL without credentials (they would end up in logs), and a bounded timeout."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from nemo_kernel.config import Settings


@pytest.mark.parametrize(
    "url", ["http://user:secret@prom:9090", "ftp://prom:9090", "http://prom:9090/?q=1", "prom:9090", "http://a b"]
)
def test_a_prometheus_url_with_credentials_or_not_http_is_refused(url: str) -> None:
    with pytest.raises(ValidationError, match="prometheus_url"):
        Settings(prometheus_url=url)


def test_a_prometheus_url_and_timeout_are_taken() -> None:
    settings = Settings(prometheus_url="https://prom.example:9090/prometheus", prometheus_timeout=2.5)
    assert (settings.prometheus_url, settings.prometheus_timeout) == ("https://prom.example:9090/prometheus", 2.5)
    for timeout in (0, -1, 301, float("nan")):
        with pytest.raises(ValidationError, match="prometheus_timeout"):
            Settings(prometheus_timeout=timeout)
