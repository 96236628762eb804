"""Adobe IMS emulation: OAuth server-to-server (client credentials) tokens that really expire.

``POST /ims/token/v3`` answers ``expires_in`` in seconds; the legacy ``POST /ims/token``
answers it in milliseconds (SPEC 3). Tokens are opaque random strings; the server keeps each
one with its expiry on its own clock, and DCS checks them against that clock.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

from worker.sandbox.config import ImsClient

TokenStatus = Literal["valid", "expired", "unknown"]
_PRUNE_EVERY = 1024


@dataclass(frozen=True, slots=True)
class TokenInfo:
    client_id: str
    scope: str
    issued_at: float
    expires_at: float


class ImsError(Exception):
    """An OAuth2 error answer: ``{"error": ..., "error_description": ...}`` with a status."""

    def __init__(self, status: int, error: str, description: str) -> None:
        super().__init__(description)
        self.status = status
        self.error = error
        self.description = description

    def body(self) -> dict[str, str]:
        return {"error": self.error, "error_description": self.description}


class TokenIssuer:
    def __init__(
        self,
        clients: Iterable[ImsClient],
        lifetime_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._clients = {c.client_id: c.client_secret for c in clients}
        self.lifetime_s = lifetime_s
        self._clock = clock
        self._tokens: dict[str, TokenInfo] = {}
        self.issued = 0
        self.failures = 0

    def issue(self, form: dict[str, str]) -> tuple[str, float]:
        """Check a token request's fields; return (access token, lifetime in seconds)."""
        grant_type = form.get("grant_type", "")
        client_id = form.get("client_id", "")
        client_secret = form.get("client_secret", "")
        try:
            if not grant_type:
                raise ImsError(400, "invalid_request", "missing grant_type parameter")
            if grant_type != "client_credentials":
                raise ImsError(400, "unsupported_grant_type", "unsupported grant_type parameter")
            if not client_id:
                raise ImsError(400, "invalid_request", "missing client_id parameter")
            expected = self._clients.get(client_id)
            if expected is None:
                raise ImsError(400, "invalid_client", "invalid client_id parameter")
            if not client_secret:
                raise ImsError(400, "invalid_request", "missing client_secret parameter")
            if not secrets.compare_digest(expected.encode(), client_secret.encode()):
                raise ImsError(401, "invalid_client", "invalid client_secret parameter")
        except ImsError:
            self.failures += 1
            raise
        now = self._clock()
        token = secrets.token_urlsafe(48)
        lifetime = self.lifetime_s
        self._tokens[token] = TokenInfo(client_id, form.get("scope", ""), now, now + lifetime)
        self.issued += 1
        if self.issued % _PRUNE_EVERY == 0:
            self._prune(now)
        return token, lifetime

    def check(self, token: str) -> TokenStatus:
        info = self._tokens.get(token)
        if info is None:
            return "unknown"
        if self._clock() >= info.expires_at:
            return "expired"
        return "valid"

    def revoke_all(self) -> int:
        count = len(self._tokens)
        self._tokens.clear()
        return count

    def _prune(self, now: float) -> None:
        # Keep expired tokens for an hour so they still answer "expired", not "unknown".
        horizon = now - 3600
        for token in [t for t, i in self._tokens.items() if i.expires_at < horizon]:
            del self._tokens[token]


def expires_in(lifetime_s: float, legacy: bool) -> int:
    """v3 answers whole seconds; the legacy endpoint milliseconds."""
    if legacy:
        return max(1, int(lifetime_s * 1000))
    return max(1, math.floor(lifetime_s))
