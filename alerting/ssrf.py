"""Receiver addresses are checked against server-side request forgery.

A webhook URL (or mail host) is an address the collector will connect to on a
tenant's behalf, so one pointing at the collector's own network (the store on
127.0.0.1:5432, a cloud metadata service on 169.254.169.254, a private
host) is refused, at save time and again at send time (the name may resolve
elsewhere by then), unless the operator allow-listed that address
(``TIERSCOPE_ALERT_ALLOWED_NETWORKS``). Every address the name resolves to
must pass.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import urlsplit

Resolver = Callable[[str, int], list[str]]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class UnsafeAddress(ValueError):
    """The address is not one the collector may send to."""


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


def _forbidden(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
    )


def check_host(
    host: str, port: int, allowed: Iterable[Network], resolver: Resolver = system_resolver
) -> None:
    """Raise :class:`UnsafeAddress` unless every address of ``host`` may be contacted."""
    allowed = list(allowed)
    try:
        addresses = resolver(host, port)
    except OSError as exc:
        raise UnsafeAddress(f"cannot resolve {host!r}: {exc}") from None
    if not addresses:
        raise UnsafeAddress(f"{host!r} resolves to no address")
    for text in addresses:
        address = ipaddress.ip_address(text.split("%", 1)[0])
        if any(address in network for network in allowed):
            continue
        if _forbidden(address):
            raise UnsafeAddress(
                f"{host!r} resolves to {address}, a loopback, private or link-local address; "
                "allow-list it with TIERSCOPE_ALERT_ALLOWED_NETWORKS if it is meant"
            )


def check_url(url: str, allowed: Iterable[Network], resolver: Resolver = system_resolver) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UnsafeAddress(f"{redact(url)} is not an http(s) URL")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    check_host(parts.hostname, port, allowed, resolver)


def redact(url: str) -> str:
    """The URL without its path and query, which often hold a secret (chat webhooks)."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or ''}{f':{parts.port}' if parts.port else ''}/..."


def check_receivers(receivers: Iterable[Any], allowed: Iterable[Network]) -> None:
    """Check every receiver's address (``rules.Receiver``); the error names the receiver."""
    allowed = list(allowed)
    for receiver in receivers:
        try:
            if receiver.email is not None:
                check_host(receiver.email.host, receiver.email.port, allowed)
            else:
                target = receiver.webhook or receiver.alertmanager or receiver.chat
                check_url(target.url, allowed)
        except UnsafeAddress as exc:
            raise UnsafeAddress(f"receiver {receiver.name}: {exc}") from None
