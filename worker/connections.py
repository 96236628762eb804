"""The worker's connections to AEP: one HTTP session, one IMS `TokenProvider` per distinct
credential set, one `DcsClient` per credential set, and the `InletRouter` over them.

A route without its own ``credentials`` uses the ``aep`` section's; routes that name the same
credentials (IMS URL, client id, scopes, secret) share one provider, so one token is minted and
cached per credential set, not per route. Unauthenticated routes get a client without tokens.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import aiohttp

from worker.aep.auth import ImsConfigError, ImsUnavailable, TokenProvider
from worker.aep.client import DcsClient, HttpSettings, make_session
from worker.aep.inlets import InletRouter
from worker.config import ConfigError, RouteCredentials, Settings
from worker.logs import get_logger
from worker.routing import Target
from worker.secret_rotation import ims_secret

__all__ = ["AepConnections", "credential_key"]

log = get_logger(__name__)

CredentialKey = tuple[str, str, str, str]


def credential_key(settings: Settings, creds: RouteCredentials | None) -> CredentialKey:
    """(ims_url, client_id, scopes, secret reference): equal keys share a TokenProvider.

    The secret is referenced by its file path, or by a digest of its value: never the value.
    """
    aep = settings.aep
    if creds is None:
        ref = (
            f"file:{aep.client_secret_file}"
            if aep.client_secret_file is not None
            else _digest(aep.client_secret.get_secret_value() if aep.client_secret else "")
        )
        return (aep.ims_url, aep.client_id or "", aep.scopes, ref)
    ref = (
        f"file:{creds.client_secret_file}"
        if creds.client_secret_file is not None
        else _digest(creds.client_secret.get_secret_value() if creds.client_secret else "")
    )
    return (creds.ims_url or aep.ims_url, creds.client_id, creds.scopes or aep.scopes, ref)


def _digest(secret: str) -> str:
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()


@dataclass(slots=True)
class AepConnections:
    session: aiohttp.ClientSession
    router: InletRouter
    providers: dict[CredentialKey, TokenProvider] = field(default_factory=dict)
    users: dict[CredentialKey, list[str]] = field(default_factory=dict)  # key -> route names

    @classmethod
    def build(
        cls, settings: Settings, targets: dict[str, Target], http: HttpSettings
    ) -> AepConnections:
        """Call inside the running event loop (the session binds to it)."""
        session = make_session(http)
        providers: dict[CredentialKey, TokenProvider] = {}
        users: dict[CredentialKey, list[str]] = {}
        clients: dict[CredentialKey | None, DcsClient] = {}
        by_url: dict[str, DcsClient] = {}
        for target in targets.values():
            key: CredentialKey | None = None
            if target.authenticated:
                key = credential_key(settings, target.credentials)
                users.setdefault(key, []).append(target.name)
                if key not in providers:
                    providers[key] = _provider(settings, target.credentials, key, session)
            client = clients.get(key)
            if client is None:
                client = DcsClient(session, tokens=providers.get(key) if key else None)
                clients[key] = client
            by_url.setdefault(target.url, client)
        router = InletRouter(by_url, single={t.url for t in targets.values() if t.raw})
        return cls(session, router, providers, users)

    async def check_tokens(self) -> None:
        """Mint every credential set's first token: a rejected client id/secret is a
        ConfigError naming the routes that use it; IMS being down is only logged."""
        for key, provider in self.providers.items():
            try:
                await provider.get()
            except ImsConfigError as exc:
                routes = ", ".join(self.users.get(key, []))
                raise ConfigError(f"{exc} [credentials of routes: {routes}]") from None
            except ImsUnavailable as exc:
                log.warning("ims_unavailable_at_start", error=str(exc)[:200])

    async def close(self) -> None:
        for provider in self.providers.values():
            await provider.close()
        if not self.session.closed:
            await self.session.close()


def _provider(
    settings: Settings,
    creds: RouteCredentials | None,
    key: CredentialKey,
    session: aiohttp.ClientSession,
) -> TokenProvider:
    ims_url, client_id, scopes, _ = key
    # A secret file is read on every token request; after invalid_client the provider waits
    # (bounded) for the file to be rotated, then retries once (secret_rotation).
    secret, reload = ims_secret(
        settings.aep if creds is None else creds,
        "aep.client_secret_file" if creds is None else "routes.credentials.client_secret_file",
        settings.aep.secret_reload_wait_s,
    )
    return TokenProvider(
        ims_url=ims_url,
        client_id=client_id,
        client_secret=secret,
        scope=scopes,
        session=session,
        reload_secret=reload,
    )
