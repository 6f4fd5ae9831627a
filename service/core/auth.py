"""API keys: configured by the operator, kept only as sha256 digests."""

from __future__ import annotations

import hashlib
import hmac
import logging
from dataclasses import dataclass

from service.core.config import Settings
from service.core.errors import Unauthorized

log = logging.getLogger(__name__)

LOCAL_OWNER = "local"


@dataclass(frozen=True)
class Principal:
    """Who is calling; jobs and files are owned by `name`."""

    name: str


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


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
