"""The CLI's HTTP client: finds the API (``--api``, ``NEMO_API``, or the ``nemo up`` of the same user)."""

from __future__ import annotations

import json
import os
from typing import Any

import httpx
import psutil

from nemo_kernel.config import Settings


class CliError(Exception):
    """An error the CLI reports in one line and exits non-zero."""


def discover_api(explicit: str | None) -> str:
    """The API base URL to talk to."""
    if explicit:
        return explicit.rstrip("/")
    path = Settings().endpoint_file
    try:
        info = json.loads(path.read_text())
    except (OSError, ValueError):
        raise CliError(
            f"no running `nemo up` found ({path} missing); start one, or pass --api URL / NEMO_API"
        ) from None
    if not psutil.pid_exists(int(info.get("pid", -1))):
        raise CliError(f"the `nemo up` recorded in {path} (pid {info.get('pid')}) is not running; start it again")
    return str(info["url"]).rstrip("/")


class ApiClient:
    """Thin synchronous client of ``/api/v1`` that turns error bodies into :class:`CliError`."""

    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        self.base_url = base_url
        self._http = httpx.Client(base_url=base_url, timeout=timeout)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        """Call the API; returns the decoded JSON body (None for 204)."""
        try:
            response = self._http.request(method, f"/api/v1{path}", **kwargs)
        except httpx.HTTPError as exc:
            raise CliError(f"cannot reach the API at {self.base_url}: {exc}") from exc
        if response.status_code >= 400:
            raise CliError(_describe_error(response))
        return response.json() if response.content else None

    def get(self, path: str, **params: Any) -> Any:
        """GET ``/api/v1{path}``."""
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, body: Any = None, **params: Any) -> Any:
        """POST a JSON body to ``/api/v1{path}``."""
        return self.request("POST", path, json=body, params={k: v for k, v in params.items() if v is not None})

    def put(self, path: str, body: Any = None) -> Any:
        """PUT a JSON body to ``/api/v1{path}``."""
        return self.request("PUT", path, json=body)

    def delete(self, path: str, **params: Any) -> Any:
        """DELETE ``/api/v1{path}``."""
        return self.request("DELETE", path, params={k: v for k, v in params.items() if v is not None})


def _describe_error(response: httpx.Response) -> str:
    try:
        error = response.json()["error"]
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code}: {response.text[:200]}"
    lines = [f"{error.get('message')} (HTTP {response.status_code}, {error.get('code')})"]
    details = error.get("details")
    if isinstance(details, list):
        lines += [f"  {d.get('field')}: {d.get('message')}" for d in details if isinstance(d, dict)]
    return "\n".join(lines)


def api_from_env_or(explicit: str | None) -> ApiClient:
    """A client for the API chosen by ``--api``, ``NEMO_API`` or discovery."""
    return ApiClient(discover_api(explicit or os.environ.get("NEMO_API")))
