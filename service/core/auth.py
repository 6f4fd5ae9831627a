"""API keys (configured by the operator, kept only as sha256 digests) and browser sessions derived from them."""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import time
from dataclasses import dataclass

from jobstore.settings import Settings
from service.core.errors import Unauthorized

log = logging.getLogger(__name__)

LOCAL_OWNER = "local"


@dataclass(frozen=True)
class Principal:
    """Who is calling; jobs and files are owned by `name`."""

    name: str


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class KeyRing:
    def __init__(self, keys: dict[str, str], disabled: bool) -> None:
        self.disabled = disabled
        self._digests = [(name, _digest(key)) for name, key in keys.items()]

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyRing:
        ring = cls(settings.parsed_api_keys(), settings.auth_disabled)
        if ring.disabled:
            log.warning(
                "AUTHENTICATION IS DISABLED (PRUNEKIT_AUTH_DISABLED=true): anyone who can reach this server "
                "can submit jobs and read every job as owner '%s'. Use this only on a local machine.",
                LOCAL_OWNER,
            )
        elif not ring._digests:
            log.warning("no API keys configured (PRUNEKIT_API_KEYS): every request will be refused with 401")
        return ring

    def authenticate(self, authorization: str | None) -> Principal:
        if self.disabled:
            return Principal(LOCAL_OWNER)
        if not authorization:
            raise Unauthorized("missing 'Authorization: Bearer <key>' header")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("the Authorization header must be 'Bearer <key>'")
        digest = _digest(token.strip())
        for name, expected in self._digests:
            if hmac.compare_digest(digest, expected):
                return Principal(name)
        raise Unauthorized("unknown API key")

    # ---------------------------------------------------------------- browser sessions
    # A browser cannot send a Bearer header from a link, so the jobs page signs in once with the key and gets a
    # cookie: `v1.<name>.<expiry>.<HMAC(key digest, name.expiry)>`. Signing with the key's own digest means every
    # API replica with the same keys accepts it, and removing a key ends its sessions; the key never leaves the form.

    def issue_session(self, principal: Principal, ttl_seconds: int, now: float | None = None) -> str:
        """A signed session token for `principal`, valid `ttl_seconds`."""
        digest = self._digest_of(principal.name)
        if digest is None:
            raise Unauthorized("no such key")
        expiry = int((now if now is not None else time.time()) + ttl_seconds)
        body = f"v1.{_b64(principal.name.encode())}.{expiry}"
        return f"{body}.{_b64(hmac.new(digest, body.encode(), hashlib.sha256).digest())}"

    def authenticate_session(self, token: str, now: float | None = None) -> Principal:
        """The principal a session token was issued to; Unauthorized if forged, expired or its key is gone."""
        if self.disabled:
            return Principal(LOCAL_OWNER)
        try:
            version, name_b64, expiry_text, sig = token.split(".")
            name, expiry = _unb64(name_b64).decode(), int(expiry_text)
        except ValueError:
            raise Unauthorized("malformed session; sign in again") from None
        digest = self._digest_of(name)
        expected = hmac.new(digest or b"", f"{version}.{name_b64}.{expiry_text}".encode(), hashlib.sha256).digest()
        if version != "v1" or digest is None or not hmac.compare_digest(_b64(expected), sig):
            raise Unauthorized("invalid session; sign in again")
        if expiry < (now if now is not None else time.time()):
            raise Unauthorized("session expired; sign in again")
        return Principal(name)

    def _digest_of(self, name: str) -> bytes | None:
        return next((d for n, d in self._digests if n == name), None)
