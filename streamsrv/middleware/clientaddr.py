# -*- test-case-name: tests.test_clientaddr -*-
"""Who the client is when streamsrv sits behind reverse proxies.

Rate limits, IP-bound signed URLs and the access log key on the client's
address.  A request's ``X-Forwarded-For`` and ``X-Forwarded-Proto`` headers
say who the client is and which scheme it used, but anybody can send them: they
are believed only when the TCP peer is one of ``STREAMSRV_TRUSTED_PROXIES``,
and ``X-Forwarded-For`` is read from the right, where trusted proxies append,
never from the left, where a client writes whatever it likes.  These functions
are pure (values in, values out); they must never raise on anything a client
sends, never return an address a client chose unless a trusted proxy vouched
for it, and never do DNS or any other I/O.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable, Sequence
from typing import TypeAlias

Network: TypeAlias = ipaddress.IPv4Network | ipaddress.IPv6Network
Address: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address

#: The longest ``X-Forwarded-For`` entry worth parsing: a bracketed IPv6
#: address with a zone and a port fits comfortably.
_MAX_ENTRY_LENGTH = 128

_PORT = re.compile(r":[0-9]{1,5}", re.ASCII)


def parse_networks(entries: Sequence[str]) -> tuple[Network, ...]:
    """
    Parse the trusted proxies, as ``STREAMSRV_TRUSTED_PROXIES`` lists them.

    A bare address trusts that host only (``/32`` or ``/128``).  An
    IPv4-mapped IPv6 entry (``::ffff:10.0.0.1``) is read as the IPv4 address it
    maps, since peers are normalised the same way.

    :param entries: Addresses or CIDR networks, e.g. ``["10.0.0.0/8", "::1"]``;
        surrounding whitespace and empty entries are ignored, duplicates
        dropped.
    :return: The networks, in the order given.
    :raise ValueError: Naming the first entry that is neither an address nor a
        network, or a network with host bits set (``10.0.0.1/8``): the intent
        of such an entry is unclear and guessing it could trust too much.
    """
    networks: list[Network] = []
    for raw in entries:
        entry = raw.strip()
        if not entry:
            continue
        try:
            network = ipaddress.ip_network(entry, strict=True)
        except ValueError as e:
            raise ValueError(f"trusted proxy {entry!r} is not an IP address or CIDR network: {e}") from None
        if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
            mapped = network.network_address.ipv4_mapped
            if mapped is not None:
                network = ipaddress.IPv4Network((mapped, network.prefixlen - 96))
        if network not in networks:
            networks.append(network)
    return tuple(networks)


def parse_address(text: str) -> Address | None:
    """
    Parse one address as a peer or a proxy reports it, or ``None``.

    Accepted: ``192.0.2.1``, ``2001:db8::1``, ``[2001:db8::1]``, and either
    with a port (``192.0.2.1:443``, ``[2001:db8::1]:443``), which some proxies
    (Azure, IIS ARR) append.  A zone (``fe80::1%eth0``) is dropped and an
    IPv4-mapped IPv6 address becomes the IPv4 address it maps, so that one host
    has one spelling.  Anything else (``unknown``, host names, garbage) is
    ``None``.

    :param text: The address, surrounding whitespace allowed.
    """
    text = text.strip()
    if not text or len(text) > _MAX_ENTRY_LENGTH:
        return None
    if text.startswith("["):
        closing = text.find("]")
        if closing < 0:
            return None
        rest = text[closing + 1 :]
        if rest and _PORT.fullmatch(rest) is None:
            return None
        text = text[1:closing]
    elif text.count(":") == 1:
        host, colon, port = text.partition(":")
        if _PORT.fullmatch(colon + port) is None:
            return None
        text = host
    text = text.partition("%")[0]
    if not text.isascii():
        return None
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _is_trusted(address: Address, trusted: Iterable[Network]) -> bool:
    return any(address.version == network.version and address in network for network in trusted)


def _forwarded_entries(x_forwarded_for: Sequence[str]) -> list[str]:
    """
    Split ``X-Forwarded-For`` field lines into entries, left to right.

    Several field lines form one comma-separated list, in the order received
    (RFC 9110 §5.3).  Empty list elements are allowed by the list syntax and
    skipped.
    """
    entries: list[str] = []
    for line in x_forwarded_for:
        entries.extend(item for item in line.split(",") if item.strip())
    return entries


def client_address(peer_ip: str, x_forwarded_for: Sequence[str] | None, trusted: Sequence[Network]) -> str:
    """
    The address of the client a request comes from.

    When the TCP peer is a trusted proxy, ``X-Forwarded-For`` is walked from
    the right: each trusted proxy is skipped, and the first address that is not
    a trusted proxy is the client.  Entries to its left were written by the
    client or by proxies we do not know, and are ignored.  A malformed entry
    stops the walk, and the last good address (the proxy that forwarded the
    garbage) is the answer.  If every entry is a trusted proxy, the leftmost is
    the client (an internal host talking through our own proxies).

    :param peer_ip: The TCP peer's address (``request.getClientAddress().host``).
    :param x_forwarded_for: Every ``X-Forwarded-For`` field line, decoded, in
        the order received, or ``None`` when there is none.
    :param trusted: From :func:`parse_networks`.
    :return: A normalised address (``str(ipaddress.ip_address(...))``).  If
        the peer itself is not an IP address (a UNIX socket), it is returned
        unchanged and ``X-Forwarded-For`` is ignored.  Never raises.
    """
    peer, peer_text = _peer(peer_ip)
    if peer is None:
        return peer_ip
    if not x_forwarded_for or not _is_trusted(peer, trusted):
        return peer_text
    current = peer
    for entry in reversed(_forwarded_entries(x_forwarded_for)):
        address = parse_address(entry)
        if address is None:
            break
        current = address
        if not _is_trusted(address, trusted):
            break
    return str(current)


@functools.lru_cache(maxsize=4096)
def _peer(peer_ip: str) -> tuple[Address | None, str]:
    """:func:`parse_address` of a TCP peer and its normalised text, remembered.

    Peers are the few addresses that connect (or proxies), parsed again for
    every request otherwise.
    """
    peer = parse_address(peer_ip)
    return peer, str(peer) if peer is not None else peer_ip


def forwarded_proto(peer_ip: str, header: str | None, trusted: Sequence[Network]) -> str | None:
    """
    The scheme a trusted proxy says the client used, from ``X-Forwarded-Proto``.

    Only a trusted peer is believed.  If a chain of proxies appended several
    values (``https, http``), the rightmost one is taken: it is what our peer
    itself asserts.

    :param peer_ip: The TCP peer's address.
    :param header: The ``X-Forwarded-Proto`` value, decoded, or ``None``.
    :param trusted: From :func:`parse_networks`.
    :return: ``"https"`` or ``"http"``; ``None`` when the peer is not trusted,
        the header is absent, or it names anything else.  Never raises.
    """
    if header is None:
        return None
    peer = parse_address(peer_ip)
    if peer is None or not _is_trusted(peer, trusted):
        return None
    value = header.rpartition(",")[2].strip().lower()
    return value if value in ("https", "http") else None
