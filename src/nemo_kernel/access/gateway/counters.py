"""Counters for rate limits and quotas on ``limits``' storage (memory or Redis), shared by plugin instances.

Windows are fixed and aligned to the clock (a minute starts at :00), as in Kong, so every gateway instance that
shares a Redis counts into the same key for the same window.
"""

from __future__ import annotations

from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.errors import StorageError

from nemo_kernel.access.gateway.config import CounterBackend

__all__ = ["CounterStores", "StorageError"]


class CounterStores:
    """One storage per backend (``local`` or a Redis URL), so plugins share connection pools."""

    def __init__(self) -> None:
        self._stores: dict[str, Storage] = {}

    def get(self, backend: CounterBackend) -> Storage:
        """The storage for ``backend``, created on first use."""
        key = "local" if backend.policy == "local" else backend.redis_url
        store = self._stores.get(key)
        if store is None:
            if backend.policy == "local":
                store = MemoryStorage()
            else:
                uri = "async+" + backend.redis_url if not backend.redis_url.startswith("async+") else backend.redis_url
                # wrap_exceptions: every backend failure surfaces as limits' StorageError, one thing to catch.
                store = RedisStorage(
                    uri, implementation="redispy", wrap_exceptions=True, socket_connect_timeout=0.5, socket_timeout=0.5
                )
            self._stores[key] = store
        return store

    async def close(self) -> None:
        """Drop the storages (connection pools close with them)."""
        self._stores.clear()


async def increment(store: Storage, key: str, window: int, now: float) -> tuple[int, float]:
    """Count one hit in the fixed window of ``window`` seconds containing ``now``.

    Returns the count after this hit and the seconds until the window ends. The key carries the window's start,
    so a window boundary is a new key; the expiry only garbage-collects old keys.
    """
    start = int(now // window) * window
    count = await store.incr(f"{key}:{start}", window + 1)
    return count, start + window - now
