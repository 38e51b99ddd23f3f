# -*- test-case-name: tests.test_clientaddr -*-
"""Tests for :mod:`streamsrv.middleware.clientaddr`."""

from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st
from twisted.trial import unittest

from streamsrv.middleware.clientaddr import (
    client_address,
    forwarded_proto,
    parse_address,
    parse_networks,
)

PROXIES = parse_networks(["10.0.0.0/8", "192.0.2.10", "2001:db8:ffff::/48"])


class ParseNetworksTests(unittest.TestCase):
    """
    ``STREAMSRV_TRUSTED_PROXIES`` entries become networks.
    """

    def test_addresses_and_networks(self) -> None:
        """
        A bare address trusts that host only; a CIDR network trusts the network.
        """
        self.assertEqual(
            parse_networks(["10.0.0.0/8", "192.0.2.1", "::1", "2001:db8::/32"]),
            (
                ipaddress.ip_network("10.0.0.0/8"),
                ipaddress.ip_network("192.0.2.1/32"),
                ipaddress.ip_network("::1/128"),
                ipaddress.ip_network("2001:db8::/32"),
            ),
        )

    def test_blank_and_duplicate_entries(self) -> None:
        """
        Whitespace around entries and empty entries are ignored; duplicates are dropped.
        """
        self.assertEqual(
            parse_networks([" 10.0.0.1 ", "", "10.0.0.1/32"]), (ipaddress.ip_network("10.0.0.1/32"),)
        )

    def test_ipv4_mapped(self) -> None:
        """
        An IPv4-mapped IPv6 entry is the IPv4 network it maps.
        """
        self.assertEqual(parse_networks(["::ffff:10.1.0.0/112"]), (ipaddress.ip_network("10.1.0.0/16"),))

    def test_invalid_entries(self) -> None:
        """
        Garbage and networks with host bits set are refused, naming the entry.
        """
        for entry in ["proxy.example", "10.0.0.1/8", "10.0.0.0/33", "1.2.3"]:
            with self.assertRaises(ValueError) as caught:
                parse_networks([entry])
            self.assertIn(repr(entry), str(caught.exception))


class ParseAddressTests(unittest.TestCase):
    """
    Addresses as peers and proxies spell them.
    """

    def test_spellings(self) -> None:
        """
        Ports, brackets and zones are stripped; IPv4-mapped IPv6 is IPv4; case is normalised.
        """
        cases = {
            "192.0.2.1": "192.0.2.1",
            " 192.0.2.1 ": "192.0.2.1",
            "192.0.2.1:8443": "192.0.2.1",
            "2001:DB8::1": "2001:db8::1",
            "[2001:db8::1]": "2001:db8::1",
            "[2001:db8::1]:443": "2001:db8::1",
            "fe80::1%eth0": "fe80::1",
            "::ffff:192.0.2.7": "192.0.2.7",
            "[::ffff:192.0.2.7]:80": "192.0.2.7",
        }
        for text, expected in cases.items():
            self.assertEqual(str(parse_address(text)), expected, text)

    def test_not_addresses(self) -> None:
        """
        Anything but an address (with an optional port) is ``None``.
        """
        for text in [
            "",
            "unknown",
            "_hidden",
            "example.com",
            "192.0.2.1:",
            "192.0.2.1:http",
            "192.0.2.1:123456",
            "[2001:db8::1",
            "[2001:db8::1]x",
            "[2001:db8::1]:",
            "192.0.2.01",
            "192.0.2.1:１２",
            "1" * 500,
        ]:
            self.assertIsNone(parse_address(text), text)


class ClientAddressTests(unittest.TestCase):
    """
    The client behind trusted proxies.
    """

    def test_untrusted_peer_header_ignored(self) -> None:
        """
        An untrusted peer is the client, whatever its X-Forwarded-For says.
        """
        self.assertEqual(client_address("203.0.113.5", ["198.51.100.1"], PROXIES), "203.0.113.5")

    def test_no_header(self) -> None:
        """
        Without X-Forwarded-For the peer is the client, trusted or not.
        """
        self.assertEqual(client_address("10.0.0.1", None, PROXIES), "10.0.0.1")
        self.assertEqual(client_address("10.0.0.1", [], PROXIES), "10.0.0.1")

    def test_no_trusted_proxies(self) -> None:
        """
        With no trusted proxies configured, X-Forwarded-For is never believed.
        """
        self.assertEqual(client_address("10.0.0.1", ["198.51.100.1"], ()), "10.0.0.1")

    def test_one_trusted_proxy(self) -> None:
        """
        Behind one trusted proxy, the address it appended is the client.
        """
        self.assertEqual(client_address("10.0.0.1", ["198.51.100.1"], PROXIES), "198.51.100.1")

    def test_chain_of_trusted_proxies(self) -> None:
        """
        Trusted proxies in the chain are skipped from the right.
        """
        self.assertEqual(
            client_address("10.0.0.1", ["198.51.100.1, 192.0.2.10, 10.2.3.4"], PROXIES), "198.51.100.1"
        )

    def test_spoofed_leftmost_entries_ignored(self) -> None:
        """
        Entries left of the first untrusted address are the client's own words and are ignored.
        """
        self.assertEqual(
            client_address("10.0.0.1", ["1.1.1.1, 127.0.0.1, 10.9.9.9, 198.51.100.1, 10.2.3.4"], PROXIES),
            "198.51.100.1",
        )

    def test_spoofed_trusted_address_on_left(self) -> None:
        """
        A client claiming a trusted address on the left gets its real address from our proxy.
        """
        self.assertEqual(client_address("10.0.0.1", ["10.5.5.5, 203.0.113.9"], PROXIES), "203.0.113.9")

    def test_several_field_lines(self) -> None:
        """
        Several X-Forwarded-For lines are one list, in the order received.
        """
        self.assertEqual(
            client_address("10.0.0.1", ["203.0.113.1, 198.51.100.1", "10.2.3.4"], PROXIES), "198.51.100.1"
        )

    def test_all_trusted(self) -> None:
        """
        If every hop is a trusted proxy, the leftmost is the client (an internal host).
        """
        self.assertEqual(client_address("10.0.0.1", ["10.3.3.3, 10.2.2.2"], PROXIES), "10.3.3.3")

    def test_malformed_entry_stops_walk(self) -> None:
        """
        A malformed entry stops the walk: the last good address, the proxy that sent it, is used.
        """
        self.assertEqual(client_address("10.0.0.1", ["198.51.100.1, unknown"], PROXIES), "10.0.0.1")
        self.assertEqual(client_address("10.0.0.1", ["198.51.100.1, garbage, 10.2.3.4"], PROXIES), "10.2.3.4")

    def test_empty_elements_skipped(self) -> None:
        """
        Empty list elements are allowed by the list syntax and skipped.
        """
        self.assertEqual(client_address("10.0.0.1", ["198.51.100.1, ,", ""], PROXIES), "198.51.100.1")

    def test_ipv6(self) -> None:
        """
        IPv6 peers, proxies and clients work, and are normalised.
        """
        self.assertEqual(
            client_address("2001:db8:ffff::1", ["2001:DB8:1::5, [2001:db8:ffff::2]:443"], PROXIES),
            "2001:db8:1::5",
        )
        self.assertEqual(client_address("2001:db8:1::1", ["198.51.100.1"], PROXIES), "2001:db8:1::1")

    def test_ipv4_mapped_peer(self) -> None:
        """
        A dual-stack socket's IPv4-mapped peer is treated as the IPv4 address.
        """
        self.assertEqual(client_address("::ffff:10.0.0.1", ["198.51.100.1"], PROXIES), "198.51.100.1")
        self.assertEqual(client_address("::ffff:203.0.113.5", None, PROXIES), "203.0.113.5")

    def test_ports_in_header(self) -> None:
        """
        Entries with ports (Azure, IIS ARR) give the address without the port.
        """
        self.assertEqual(client_address("10.0.0.1", ["198.51.100.1:53211"], PROXIES), "198.51.100.1")

    def test_non_ip_peer(self) -> None:
        """
        A peer that is not an IP address (a UNIX socket) is returned unchanged, header ignored.
        """
        self.assertEqual(client_address("", ["198.51.100.1"], PROXIES), "")
        self.assertEqual(
            client_address("/run/streamsrv.sock", ["198.51.100.1"], PROXIES), "/run/streamsrv.sock"
        )

    @given(
        peer=st.one_of(st.text(max_size=50), st.ip_addresses().map(str)),
        header=st.one_of(
            st.none(),
            st.lists(
                st.one_of(
                    st.text(max_size=80),
                    st.lists(st.ip_addresses().map(str), max_size=6).map(", ".join),
                ),
                max_size=4,
            ),
        ),
    )
    def test_never_raises(self, peer: str, header: list[str] | None) -> None:
        """
        Whatever the peer and header, an answer comes back: the peer, or an
        address from the header when the peer is trusted.
        """
        trusted = (*PROXIES, ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))
        for networks in (PROXIES, trusted, ()):
            result = client_address(peer, header, networks)
            self.assertIsInstance(result, str)
            if not networks or parse_address(peer) is None:
                expected_peer = peer if parse_address(peer) is None else str(parse_address(peer))
                self.assertEqual(result, expected_peer)

    @given(
        client=st.ip_addresses(),
        spoofed=st.lists(st.ip_addresses().map(str), max_size=5),
        hops=st.lists(st.sampled_from(["10.1.1.1", "192.0.2.10", "2001:db8:ffff::9"]), max_size=4),
    )
    def test_client_found_behind_trusted_hops(
        self, client: ipaddress.IPv4Address | ipaddress.IPv6Address, spoofed: list[str], hops: list[str]
    ) -> None:
        """
        Whatever a client prepends, an untrusted client behind trusted hops is found exactly.
        """
        normal = parse_address(str(client))
        assert normal is not None
        if any(normal in network for network in PROXIES if network.version == normal.version):
            return
        header = ", ".join([*spoofed, str(client), *hops])
        self.assertEqual(client_address("10.0.0.1", [header], PROXIES), str(normal))


class ForwardedProtoTests(unittest.TestCase):
    """
    X-Forwarded-Proto from trusted proxies only.
    """

    def test_trusted(self) -> None:
        """
        A trusted peer's https or http is believed, case-insensitively.
        """
        self.assertEqual(forwarded_proto("10.0.0.1", "https", PROXIES), "https")
        self.assertEqual(forwarded_proto("10.0.0.1", " HTTP ", PROXIES), "http")

    def test_untrusted(self) -> None:
        """
        An untrusted peer's header is ignored.
        """
        self.assertIsNone(forwarded_proto("203.0.113.5", "https", PROXIES))

    def test_absent_or_other(self) -> None:
        """
        No header, or one naming another scheme, gives ``None``.
        """
        self.assertIsNone(forwarded_proto("10.0.0.1", None, PROXIES))
        self.assertIsNone(forwarded_proto("10.0.0.1", "wss", PROXIES))
        self.assertIsNone(forwarded_proto("10.0.0.1", "", PROXIES))

    def test_list_takes_rightmost(self) -> None:
        """
        Of appended values, the one our peer added (the rightmost) counts.
        """
        self.assertEqual(forwarded_proto("10.0.0.1", "http, https", PROXIES), "https")
        self.assertEqual(forwarded_proto("10.0.0.1", "https,http", PROXIES), "http")

    @given(peer=st.text(max_size=40), header=st.one_of(st.none(), st.text(max_size=40)))
    def test_never_raises(self, peer: str, header: str | None) -> None:
        """
        Any peer and header give ``"https"``, ``"http"`` or ``None``.
        """
        self.assertIn(forwarded_proto(peer, header, PROXIES), ("https", "http", None))
