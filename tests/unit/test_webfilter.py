"""The webfilter sample's request reading and blocklist matching."""

import pytest

from divertgui.samples.webfilter import BlocklistError, Entry, blocked, parse_entry, requested


@pytest.mark.parametrize("payload, expected", [
    (b"GET /a/b?c HTTP/1.1\r\nHost: Example.ORG.\r\n\r\n", ("example.org", "/a/b?c")),
    (b"POST /form HTTP/1.1\r\nUser-Agent: x\r\nhost: h.example:8080\r\n\r\n", ("h.example", "/form")),
    (b"GET http://proxy.example/x HTTP/1.1\r\nHost: [fd00::1]:80\r\n\r\n", ("fd00::1", "/x")),
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


def test_a_bad_entry_says_where():
    with pytest.raises(BlocklistError, match="list.txt:3: 'a b' is not a host"):
        parse_entry("a b", "list.txt:3")
