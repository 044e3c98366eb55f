"""The vault's token keys as the middleware sees them: fetched from the JWKS, cached by kid.

An unknown kid triggers a refresh, at most once per ``min_refresh_seconds``, so a flood of forged
kids cannot turn into a flood of requests to the vault. A request that meets an unknown kid
within that interval waits for the next refresh instead of being refused at once: a token signed
by a key rotated in a moment ago is accepted as soon as the vault publishes the key. Requests
that waited while a refresh ran take its result, so each waits for one refresh at most.
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
        self, http: httpx.AsyncClient, jwks_url: str, *, min_refresh_seconds: float = 1.0
    ) -> None:
        self._http = http
        self._url = jwks_url
        self._min_refresh = min_refresh_seconds
        self._keys: dict[str, Ed25519PublicKey] = {}
        self._refreshed_at = float("-inf")
        self._loaded = False
        self._lock = asyncio.Lock()
        self._refreshes = 0  # how many refreshes ran

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
        before = self._refreshes
        async with self._lock:
            if kid in self._keys or self._refreshes != before:
                return  # a refresh ran while this request waited: its answer stands
            wait = self._refreshed_at + self._min_refresh - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            self._refreshes += 1
            self._refreshed_at = time.monotonic()
            try:
                response = await self._http.get(self._url)
                response.raise_for_status()
                self._keys = public_keys_from_jwks(response.json())
                self._loaded = True
            except (httpx.HTTPError, ValueError) as exc:
                # Keep the keys we had: verification of known kids goes on; unknown ones fail.
                log.warning("JWKS refresh from %s failed: %s", self._url, type(exc).__name__)
