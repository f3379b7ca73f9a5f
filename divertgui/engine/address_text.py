"""IP addresses as text, read and written exactly as WinDivert's helpers
read and write them (WinDivertHelperParseIPv4Address, ParseIPv6Address,
FormatIPv4Address and FormatIPv6Address in dll/windivert_helper.c); the
filter language reads its number and address literals with these too.

Each reader returns the value, or None when the text is not that kind of
literal. Numbers are at most 128 bits.
"""

from __future__ import annotations

MAX_VALUE = (1 << 128) - 1
IPV4_MAPPED = 0xFFFF00000000
# The 12 bytes before an IPv4 address in its IPv4-mapped IPv6 form.
IPV4_MAPPED_PREFIX = IPV4_MAPPED.to_bytes(16, "big")[:12]
_DIGITS = frozenset("0123456789")
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def read_decimal(text: str) -> tuple[int, int] | None:
    """(value, characters read) for the leading decimal digits of `text`."""
    end = 0
    while end < len(text) and text[end] in _DIGITS:
        end += 1
    if end == 0:
        return None
    value = int(text[:end])
    return (value, end) if value <= MAX_VALUE else None


def read_hex(text: str, prefix: bool) -> tuple[int, int] | None:
    """(value, characters read) for a hex number; `prefix` requires a leading "0x"."""
    start = 0
    if prefix:
        if not text.startswith("0x"):
            return None
        start = 2
    end = start
    while end < len(text) and text[end] in _HEX_DIGITS:
        end += 1
    if end == 0:
        return None
    value = int(text[start:end], 16) if end > start else 0
    return (value, end) if value <= MAX_VALUE else None


def parse_ipv4(text: str) -> int | None:
    """A dotted quad as a 32-bit number. Parts are decimal, leading zeros
    allowed ("010" is 10); a part is its number's low 32 bits, as WinDivertAToI
    leaves it when asked for one word."""
    value, pos = 0, 0
    for part_index in range(4):
        read = read_decimal(text[pos:])
        if read is None or (read[0] & 0xFFFFFFFF) > 0xFF:
            return None
        part, length = read[0] & 0xFFFFFFFF, read[1]
        pos += length
        if part_index != 3:
            if text[pos:pos + 1] != ".":
                return None
            pos += 1
        value |= part << (8 * (3 - part_index))
    return value if pos == len(text) else None
def parse_ipv6(text: str) -> int | None:
    """An IPv6 address as a 128-bit number, following the reference's reader
    (it stops after eight groups and accepts an IPv4 tail)."""
    def at(p: int) -> str:
        return text[p] if p < len(text) else ""

    left_groups, right_groups = [0] * 8, [0] * 8
    left, ipv4, ipv4_value = True, False, 0
    i = j = p = 0
    finished = False
    if at(p) == ":":
        p += 1
        if at(p) != ":":
            return None
        left = False
        p += 1
        finished = p == len(text)
    k = 0
    while not finished and k < 8:
        if at(p) == ":":
            if not left:
                return None
            left = False
            p += 1
            if p == len(text):
                break
        if i < 6:
            tail = parse_ipv4(text[p:])
            if tail is not None:
                ipv4, ipv4_value = True, tail
                j += 2
                break
        start = p
        while p - start < 4 and at(p) in _HEX_DIGITS and at(p):
            p += 1
        if p == start:
            return None
        if at(p) not in (":", ""):
            return None
        group = int(text[start:p], 16)
        if left:
            left_groups[i] = group
            i += 1
        else:
            right_groups[j] = group
            j += 1
        if p == len(text):
            if not left or k == 7:
                break
            return None
        p += 1
        k += 1
    words = [0, 0, 0, 0]
    for n in range(4):
        a, b = 2 * n + j, 2 * n + j + 1
        a, b = a - 8 if a >= 8 else a, b - 8 if b >= 8 else b
        words[3 - n] = (left_groups[2 * n + 1] | left_groups[2 * n] << 16
                        | right_groups[b] | right_groups[a] << 16) & 0xFFFFFFFF
    if ipv4:
        if words[3] or words[2] or words[0] or words[1] not in (0xFFFF, 0):
            return None
        words[0] = ipv4_value
    return words[3] << 96 | words[2] << 64 | words[1] << 32 | words[0]



def format_ipv4(value: int) -> str:
    return ".".join(str(value >> shift & 0xFF) for shift in (24, 16, 8, 0))


def format_ipv6(value: int) -> str:
    """An IPv4-mapped address as its dotted quad alone; otherwise the groups
    in lower-case hex with the first longest run of zero groups, even a
    single one, written "::"."""
    if value >> 32 == IPV4_MAPPED >> 32:
        return format_ipv4(value & 0xFFFFFFFF)
    groups = [value >> (16 * (7 - k)) & 0xFFFF for k in range(8)]
    best_start, best_len, run_start, run_len = -1, 0, -1, 0
    for k in range(8):
        if groups[k] == 0:
            if run_len == 0:
                run_start = k
            run_len += 1
            if run_len > best_len:
                best_start, best_len = run_start, run_len
        else:
            run_len = 0
    if best_len == 0:
        return ":".join(f"{g:x}" for g in groups)
    head = ":".join(f"{g:x}" for g in groups[:best_start])
    tail = ":".join(f"{g:x}" for g in groups[best_start + best_len:])
    return f"{head}::{tail}"


def event_address_text(address: int, ipv6: bool) -> str:
    """A FLOW or SOCKET event's address in its event's family: an IPv4 one (IPv4-mapped, or 0
    while unset) as its dotted quad, an IPv6 one as IPv6."""
    return format_ipv6(address) if ipv6 else format_ipv4(address & 0xFFFFFFFF)


def event_endpoint_text(address: int, port: int, ipv6: bool) -> str:
    text = event_address_text(address, ipv6)
    return f"[{text}]:{port}" if ipv6 else f"{text}:{port}"
