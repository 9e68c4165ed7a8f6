"""The client's address as the proxy trusts it: the peer, or what trusted reverse proxies forwarded.

``X-Forwarded-For`` is believed only as far as it was written by proxies on the configured
trusted list (``LLMSERVER_TRUSTED_PROXIES``): walking the header from the right, the first
address that is not a trusted proxy is the client. With no trusted proxies, or a peer that is not
one, the header is ignored entirely (anyone can send it). Several ``X-Forwarded-For`` header lines
are one list, in order (RFC 7230 3.2.2: the same as their values joined with commas), so a client's
own line cannot hide the hops that trusted proxies appended on lines of their own.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(text: str) -> tuple[Network, ...]:
    """Comma-separated CIDR networks or addresses; ``ValueError`` names a bad one."""
    networks = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            networks.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ValueError(f"{part!r} is not an IP address or CIDR network") from None
    return tuple(networks)


def _trusted(address: str, trusted: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return any(ip in net for net in trusted)


def client_address(peer: str | None, forwarded_for: Sequence[str], trusted: Sequence[Network]) -> str | None:
    """The client address for a request from ``peer`` carrying the ``X-Forwarded-For`` header lines
    ``forwarded_for`` (every line, in order: ``request.headers.getall("X-Forwarded-For", ())``)."""
    if peer is None or not trusted or not _trusted(peer, trusted) or not forwarded_for:
        return peer
    lines = (forwarded_for,) if isinstance(forwarded_for, str) else forwarded_for  # one line given as a str
    hops = [h.strip() for line in lines for h in line.split(",") if h.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, trusted):
            return hop
    return hops[0] if hops else peer


def forwarded_https(peer: str | None, forwarded_proto: str | None, trusted: Sequence[Network]) -> bool:
    """Whether a trusted reverse proxy says the client reached it over TLS (``X-Forwarded-Proto``).

    The header is believed only from a peer on the trusted list, and only the value that peer wrote
    (the last one: a proxy that appends keeps whatever the client sent before it)."""
    if peer is None or not forwarded_proto or not _trusted(peer, trusted):
        return False
    return forwarded_proto.split(",")[-1].strip().lower() == "https"
