"""The webfilter sample's request reading and blocklist matching."""

import pytest

from divertgui.samples.webfilter import BlocklistError, Entry, blocked, parse_entry, requested


@pytest.mark.parametrize("payload, expected", [
    (b"GET /a/b?c HTTP/1.1\r\nHost: Example.ORG.\r\n\r\n", ("example.org", "/a/b?c")),
    (b"POST /form HTTP/1.1\r\nUser-Agent: x\r\nhost: h.example:8080\r\n\r\n", ("h.example", "/form")),
    (b"GET http://proxy.example/x HTTP/1.1\r\nHost: [fd00::1]:80\r\n\r\n", ("fd00::1", "/x")),
    (b"GET /ads/1 HTTP/1.1\r\nHost: [FD00:0:0::1]\r\n\r\n", ("fd00::1", "/ads/1")),
    (b"GET / HTTP/1.1\r\n", None),                    # no Host in this packet
    (b"\x16\x03\x01 TLS", None),
])
def test_requested_reads_host_and_path(payload, expected):
    assert requested(payload) == expected


def test_entries_cover_subdomains_and_path_prefixes_only():
    entries = [parse_entry("example.org", "x"), parse_entry("10.0.0.80/ads/", "x")]
    assert entries == [Entry("example.org", "/"), Entry("10.0.0.80", "/ads/")]
    assert blocked(entries, "www.example.org", "/") == entries[0]
    assert blocked(entries, "notexample.org", "/") is None
    assert blocked(entries, "10.0.0.80", "/ads/banner") == entries[1]
    assert blocked(entries, "10.0.0.80", "/index.html") is None


def test_an_ipv6_address_entry_matches_its_requests_however_the_address_is_written():
    entry = parse_entry("[FD77:0::2]/ads/", "x")
    assert entry == Entry("fd77::2", "/ads/")
    assert blocked([entry], *requested(b"GET /ads/x HTTP/1.1\r\nHost: [fd77:0:0:0::2]:80\r\n\r\n")) == entry
    assert blocked([entry], *requested(b"GET /news HTTP/1.1\r\nHost: [fd77::2]\r\n\r\n")) is None
    with pytest.raises(BlocklistError, match="is not a host"):
        parse_entry("[not-an-address]/ads/", "x")


def test_a_bad_entry_says_where():
    with pytest.raises(BlocklistError, match="list.txt:3: 'a b' is not a host"):
        parse_entry("a b", "list.txt:3")
