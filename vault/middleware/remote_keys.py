"""The vault's token keys as the middleware sees them: fetched from the JWKS, cached by kid.

An unknown kid triggers a refresh, at most once per ``min_refresh_seconds``, so a flood of forged
kids cannot turn into a flood of requests to the vault.
"""

from __future__ import annotations

import asyncio
import logging
import time

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from vault.crypto.keys import public_keys_from_jwks

log = logging.getLogger("vault.middleware")


class RemoteKeySet:
    def __init__(
        self, http: httpx.AsyncClient, jwks_url: str, *, min_refresh_seconds: float = 10.0
    ) -> None:
        self._http = http
        self._url = jwks_url
        self._min_refresh = min_refresh_seconds
        self._keys: dict[str, Ed25519PublicKey] = {}
        self._refreshed_at = float("-inf")
        self._loaded = False
        self._lock = asyncio.Lock()

    @property
    def loaded(self) -> bool:
        """Whether the JWKS was ever fetched: until then an unknown kid proves nothing."""
        return self._loaded

    def cached(self, kid: str) -> Ed25519PublicKey | None:
        return self._keys.get(kid)

    async def ensure(self, kid: str) -> None:
        """Make sure ``kid`` is known if the vault publishes it (refresh, rate-limited)."""
        if kid in self._keys:
            return
        async with self._lock:
            if kid in self._keys or time.monotonic() - self._refreshed_at < self._min_refresh:
                return
            self._refreshed_at = time.monotonic()
            try:
                response = await self._http.get(self._url)
                response.raise_for_status()
                self._keys = public_keys_from_jwks(response.json())
                self._loaded = True
            except (httpx.HTTPError, ValueError) as exc:
                # Keep the keys we had: verification of known kids goes on; unknown ones fail.
                log.warning("JWKS refresh from %s failed: %s", self._url, type(exc).__name__)
