"""Which webhook targets a job may name: hosts on the operator's allowlist, public addresses only.

An allowlist entry is either an exact host name or IP ("hooks.example.com", "10.0.0.7") or a
suffix pattern ("*.example.com"). Exact entries are trusted to resolve anywhere, private networks
included; hosts matched only by a pattern must resolve to public addresses, so a job cannot make
the server call internal services.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from urllib.parse import urlsplit

from jobstore.settings import Settings


class WebhookRefused(ValueError):
    """The URL is not allowed (not on the allowlist, private address, bad scheme)."""


_LABEL = re.compile(r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?")


def _valid_host(host: str) -> bool:
    """An IP literal or a DNS name that resolvers accept (labels of 1-63 characters, 253 in all)."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    try:
        name = host.rstrip(".").encode("idna").decode("ascii")
    except UnicodeError:
        return False
    return len(name) <= 253 and all(_LABEL.fullmatch(label) for label in name.split("."))


def _match(host: str, allowed: list[str]) -> str | None:
    """'exact', 'pattern' or None."""
    host = host.lower().rstrip(".")
    for entry in allowed:
        if entry == host:
            return "exact"
    for entry in allowed:
        if entry.startswith("*.") and host.endswith(entry[1:]) and len(host) > len(entry) - 1:
            return "pattern"
    return None


def check_url(url: str, settings: Settings) -> tuple[str, str]:
    """Validate a webhook URL against the settings; returns (host, match kind)."""
    if settings.webhook_secret is None or not settings.webhook_allowed_hosts:
        raise WebhookRefused(
            "webhooks are not enabled on this server (the operator sets PRUNEKIT_WEBHOOK_SECRET "
            "and PRUNEKIT_WEBHOOK_ALLOWED_HOSTS)"
        )
    if len(url) > 2000:
        raise WebhookRefused("the URL is too long")
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. an unclosed '[' of an IPv6 address
        raise WebhookRefused(f"the URL is malformed: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise WebhookRefused("the URL must be http or https")
    if parts.username or parts.password:
        raise WebhookRefused("credentials in the URL are not allowed")
    try:
        port_ok = parts.port != 0  # parsed only now: raises on a port that is not a number up to 65535
    except ValueError:
        port_ok = False
    if not port_ok:
        # Checked here, or delivery would fail on it later, after the job ran.
        raise WebhookRefused("the URL's port must be a number from 1 to 65535")
    host = parts.hostname
    if not host:
        raise WebhookRefused("the URL has no host")
    if not _valid_host(host):
        raise WebhookRefused(f"'{host}' is not a valid host name")
    kind = _match(host, settings.webhook_allowed_hosts)
    if kind is None:
        raise WebhookRefused(f"host '{host}' is not on the server's webhook allowlist")
    return host, kind


def _is_public(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return _is_public(ip.ipv4_mapped)
    return ip.is_global and not (ip.is_multicast or ip.is_reserved)


def resolve_target(url: str, settings: Settings) -> tuple[str, str]:
    """Check the URL, resolve its host once and return (host, ip) to connect to (no second lookup)."""
    host, kind = check_url(url, settings)
    port = urlsplit(url).port or (443 if url.lower().startswith("https") else 80)
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise WebhookRefused(f"cannot resolve '{host}': {exc}") from None
    ips = [ipaddress.ip_address(info[4][0]) for info in infos]
    if not ips:
        raise WebhookRefused(f"'{host}' resolves to nothing")
    if kind != "exact":
        bad = [str(ip) for ip in ips if not _is_public(ip)]
        if bad:
            raise WebhookRefused(
                f"'{host}' resolves to non-public address(es) {', '.join(bad)}; only hosts listed exactly "
                "in PRUNEKIT_WEBHOOK_ALLOWED_HOSTS may be private"
            )
    return host, str(ips[0])
