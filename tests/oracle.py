"""The reference implementation, for tests only: WinDivert's own filter
compiler, evaluator, formatter, packet hash and checksum helper as shipped in
pydivert's Linux wheel (pydivert/bpf/libebpfdivert.so), called through ctypes.

Never imported by the engine.
"""

from __future__ import annotations

import ctypes
import struct
import re

from divertgui.engine.address import Address, Layer

try:
    from pydivert.bpf import WinDivertAddress, libebpfdivert as _lib
except ImportError:  # pragma: no cover - depends on the environment
    WinDivertAddress = None
    _lib = None

AVAILABLE = _lib is not None
UNAVAILABLE_REASON = "pydivert's libebpfdivert (the reference filter compiler) is not installed"

_FORMAT_BUFFER = 64 * 1024


# The reference crashes (segfault) on a comparison operator or '-' followed
# directly by '?' or ':', e.g. "(tcp.DstPort < ? udp : icmp)"; such texts are
# kept away from it.
_CRASHES_REFERENCE = re.compile(r"(==|!=|<=|>=|=|<|>|-)\s*(\?|:(?![:0-9a-fA-F]))")


def crashes_reference(text: str) -> bool:
    return bool(_CRASHES_REFERENCE.search(text))


def _require() -> None:
    if _lib is None:
        raise RuntimeError(UNAVAILABLE_REASON)


def to_windivert_address(address: Address) -> "WinDivertAddress":
    out = WinDivertAddress()
    out.Timestamp = address.timestamp
    out.Layer = int(address.layer)
    out.Event = int(address.event)
    out.Sniffed = int(bool(address.sniffed))
    out.Outbound = int(bool(address.outbound))
    out.Loopback = int(bool(address.loopback))
    out.Impostor = int(bool(address.impostor))
    out.IPv6 = int(bool(address.ipv6))
    out.IPChecksum = int(bool(address.ip_checksum))
    out.TCPChecksum = int(bool(address.tcp_checksum))
    out.UDPChecksum = int(bool(address.udp_checksum))
    if address.flow is not None:
        data = address.flow
        out.Flow.EndpointId = data.endpoint_id
        out.Flow.ParentEndpointId = data.parent_endpoint_id
        out.Flow.ProcessId = data.process_id
        for n in range(4):
            # Word 0 holds the address's low 32 bits, as WinDivert stores it.
            out.Flow.LocalAddr[n] = data.local_addr >> (32 * n) & 0xFFFFFFFF
            out.Flow.RemoteAddr[n] = data.remote_addr >> (32 * n) & 0xFFFFFFFF
        out.Flow.LocalPort = data.local_port
        out.Flow.RemotePort = data.remote_port
        out.Flow.Protocol = data.protocol
    elif address.reflect is not None:
        data = address.reflect
        out.Reflect.Timestamp = data.timestamp
        out.Reflect.ProcessId = data.process_id
        out.Reflect.Layer = int(data.layer)
        out.Reflect.Flags = data.flags
        out.Reflect.Priority = data.priority
    else:
        out.Network.IfIdx = address.if_idx & 0xFFFFFFFF
        out.Network.SubIfIdx = address.sub_if_idx & 0xFFFFFFFF
    return out


def compile(text: str, layer: Layer = Layer.NETWORK) -> tuple[bool, str, int]:
    """(ok, error message, error position) as WinDivertHelperCompileFilter gives them."""
    _require()
    if crashes_reference(text):
        raise ValueError(f"the reference crashes on this filter: {text!r}")
    msg, pos = ctypes.c_char_p(), ctypes.c_uint32(0)
    ret = _lib.ebpfdivert_helper_compile_filter(
        text.encode("latin-1", "replace"), int(layer), ctypes.byref(msg), ctypes.byref(pos))
    if ret == 0:
        return True, "", 0
    return False, (msg.value or b"").decode(errors="replace"), pos.value


def eval(text: str, raw: bytes, address: Address) -> bool | None:
    """True/False, or None when the reference reports an error (bad filter or unparsable packet)."""
    _require()
    # The reference refuses a packet at the FLOW and SOCKET layers, which have none.
    no_packet = address.layer in (Layer.FLOW, Layer.SOCKET)
    buf = None if no_packet else ctypes.create_string_buffer(bytes(raw), max(len(raw), 1))
    addr = to_windivert_address(address)
    ret = _lib.ebpfdivert_helper_eval_filter(
        text.encode("latin-1", "replace"), buf, 0 if no_packet else len(raw), ctypes.byref(addr))
    if ret in (0, 1):
        return bool(ret)
    return None


def format(text: str, layer: Layer = Layer.NETWORK) -> str | None:
    """The canonical text, or None when the filter does not compile."""
    _require()
    out = ctypes.create_string_buffer(_FORMAT_BUFFER)
    ret = _lib.ebpfdivert_helper_format_filter(
        text.encode("latin-1", "replace"), int(layer), out, _FORMAT_BUFFER)
    if ret != 0:
        return None
    return out.value.decode(errors="replace")


def hash(raw: bytes, seed: int = 0) -> int:
    _require()
    buf = ctypes.create_string_buffer(bytes(raw), max(len(raw), 1))
    return int(_lib.ebpfdivert_helper_hash_packet(buf, len(raw), seed & 0xFFFFFFFFFFFFFFFF))


def calc_checksums(raw: bytes, address: Address | None = None, flags: int = 0) -> bytes:
    """The packet with its checksums recomputed by WinDivertHelperCalcChecksums."""
    _require()
    buf = ctypes.create_string_buffer(bytes(raw), max(len(raw), 1))
    addr = to_windivert_address(address) if address is not None else None
    _lib.ebpfdivert_helper_calc_checksums(
        buf, len(raw), ctypes.byref(addr) if addr is not None else None, flags)
    return buf.raw[:len(raw)]


# WinDivert's address helpers are in the library as local symbols only:
# they are called at their address, found from the library's symbol table.
def _symbol_values(path: str, names: set[str]) -> dict[str, int]:
    """st_value of each named symbol in an ELF64 little-endian file's .symtab."""
    with open(path, "rb") as f:
        data = f.read()
    section_offset, = struct.unpack_from("<Q", data, 0x28)
    entry_size, count = struct.unpack_from("<HH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, section_offset + i * entry_size) for i in range(count)]
    found = {}
    for _, kind, _, _, offset, size, link, _, _, symbol_size in sections:
        if kind != 2:   # SHT_SYMTAB
            continue
        strings = sections[link][4]
        for at in range(offset, offset + size, symbol_size):
            name_at, _, _, _, value, _ = struct.unpack_from("<IBBHQQ", data, at)
            name = data[strings + name_at:data.index(b"\0", strings + name_at)].decode()
            if name in names:
                found[name] = value
    return found


_PARSE = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_char_p, ctypes.POINTER(ctypes.c_uint32))
_FORMAT_IPV4 = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_uint32, ctypes.c_char_p, ctypes.c_uint)
_FORMAT_IPV6 = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_uint32), ctypes.c_char_p, ctypes.c_uint)
_HELPER_TYPES = {"WinDivertHelperParseIPv4Address": _PARSE, "WinDivertHelperParseIPv6Address": _PARSE,
                 "WinDivertHelperFormatIPv4Address": _FORMAT_IPV4, "WinDivertHelperFormatIPv6Address": _FORMAT_IPV6}
_helpers: dict = {}


def _helper(name: str):
    _require()
    if not _helpers:
        exported = "ebpfdivert_helper_eval_filter"
        values = _symbol_values(_lib._name, set(_HELPER_TYPES) | {exported})
        base = ctypes.cast(getattr(_lib, exported), ctypes.c_void_p).value - values[exported]
        _helpers.update({helper: kind(base + values[helper]) for helper, kind in _HELPER_TYPES.items()})
    return _helpers[name]


def _words(value: int):
    """A 128-bit number as WinDivert holds it: four host-order words, least significant first."""
    return (ctypes.c_uint32 * 4)(*(value >> 32 * i & 0xFFFFFFFF for i in range(4)))


def parse_ipv4_address(text: str) -> int | None:
    out = ctypes.c_uint32()
    ok = _helper("WinDivertHelperParseIPv4Address")(text.encode("latin-1"), ctypes.byref(out))
    return out.value if ok else None


def parse_ipv6_address(text: str) -> int | None:
    out = _words(0)
    ok = _helper("WinDivertHelperParseIPv6Address")(text.encode("latin-1"), out)
    return sum(word << 32 * i for i, word in enumerate(out)) if ok else None


def format_ipv4_address(value: int) -> str:
    buffer = ctypes.create_string_buffer(64)
    assert _helper("WinDivertHelperFormatIPv4Address")(value, buffer, len(buffer))
    return buffer.value.decode()


def format_ipv6_address(value: int) -> str:
    buffer = ctypes.create_string_buffer(64)
    assert _helper("WinDivertHelperFormatIPv6Address")(_words(value), buffer, len(buffer))
    return buffer.value.decode()
