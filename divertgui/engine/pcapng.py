"""Capture files: write pcapng, read pcapng and classic pcap.

Packets are raw IP (as a Divert handle gives them), so the writer declares
LINKTYPE_RAW interfaces with nanosecond timestamps and keeps the direction in
each Enhanced Packet Block's epb_flags option. The reader turns every link
type a Linux or Wireshark user is likely to have (raw IP, Ethernet with VLAN
tags, Linux cooked SLL/SLL2, BSD loopback) back into raw IP records.

The section and interface blocks are dpkt.pcapng's; Enhanced Packet Blocks
are packed and unpacked with struct on dpkt's own layout, because they are
per packet and the writer must keep up with 100,000 packets per second.
"""

from __future__ import annotations

import collections
import io
import itertools
import mmap
import os
import re
import struct
import time
from typing import BinaryIO, Callable, Iterable, Iterator, NamedTuple

import dpkt
from dpkt import pcapng as ng

from divertgui.engine.address import Address
from divertgui.engine.errors import CaptureFileError
from divertgui.engine.header_fields import ip_version

LINKTYPE_NULL = 0
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_LOOP = 108
LINKTYPE_LINUX_SLL = 113
LINKTYPE_IPV4 = 228
LINKTYPE_IPV6 = 229
LINKTYPE_LINUX_SLL2 = 276

# Custom Blocks (pcapng specification, section 4.8): the copyable kind and the kind a
# rewriting tool must drop. Ours carry PEN, the number IANA reserves for documentation
# and examples (RFC 5612): divertgui has none of its own, and its blocks say what they
# are in a header of their own as well (docs/capture-files.md).
CUSTOM_BLOCK, CUSTOM_BLOCK_NO_COPY = 0x00000BAD, 0x40000BAD
PEN = 32473

# epb_flags bits 0-1, as the pcapng specification numbers them.
DIRECTION_UNKNOWN, DIRECTION_INBOUND, DIRECTION_OUTBOUND = 0, 1, 2
EPB_OPT_FLAGS = 2

SNAPLEN = 262144
# Interfaces written by this module carry their OS index here, so that a
# replayed packet gets the if_idx it was captured with.
_IF_IDX_DESCRIPTION = re.compile(r"\bif_idx=(\d+)\b")


class CaptureRecord(NamedTuple):
    raw: bytes                  # the IP packet, starting at the IPv4/IPv6 header
    timestamp_ns: int           # wall clock, nanoseconds since the Unix epoch
    interface: int              # interface number within the file
    if_idx: int                 # the OS interface index when recorded, else interface + 1
    outbound: bool | None       # None when the file does not say
    loopback: bool | None       # None when the file does not say
    comment: str | None = None
    wire_len: int = 0           # length on the wire (> len(raw) when the capture was cut short)
    interface_name: str = ""    # the file's name of its interface ("" when the file names none)


class Interface(NamedTuple):
    linktype: int
    name: str
    if_idx: int
    ts_units_per_s: int         # timestamp ticks per second (if_tsresol)
    ts_offset_s: int            # if_tsoffset
    loopback: bool | None


# ---------------------------------------------------------------- writing

_EPB_HEAD = struct.Struct(ng.EnhancedPacketBlockLE.__hdr_fmt__[:-1])   # all but the trailing length
_EPB_TAIL = struct.Struct("<I")
_OPT_HEAD = struct.Struct("<HH")
_FLAGS_OPTION = {
    False: _OPT_HEAD.pack(EPB_OPT_FLAGS, 4) + struct.pack("<I", DIRECTION_INBOUND),
    True: _OPT_HEAD.pack(EPB_OPT_FLAGS, 4) + struct.pack("<I", DIRECTION_OUTBOUND),
}
_END_OF_OPTIONS = _OPT_HEAD.pack(ng.PCAPNG_OPT_ENDOFOPT, 0)
_PADDING = (b"", b"\0\0\0", b"\0\0", b"\0")


def _option(code: int, value: bytes) -> ng.PcapngOptionLE:
    return ng.PcapngOptionLE(code=code, data=value)


def _comment_option(text: str) -> bytes:
    data = text.encode("utf-8")
    return _OPT_HEAD.pack(ng.PCAPNG_OPT_COMMENT, len(data)) + data + _PADDING[len(data) & 3]


def no_interface_name(if_idx: int, loopback: bool) -> None:
    return None


class PcapngWriter:
    """Streams packets into a pcapng file: one SHB, an IDB per interface seen, an EPB per packet.

    Usable as a context manager. write() appends to the file's buffer;
    write_batch() and flush() push what was written to the file.
    An interface's name in the file is the packet's own (`interface_name` of
    write()) or else `interface_name(if_idx, loopback)` of the writer; None
    leaves the name out. Only the capturing side knows an index's name: by
    default the file names no interface.
    """

    def __init__(self, target: str | os.PathLike | BinaryIO, *, application: str = "divertgui",
                 comment: str | None = None,
                 interface_name: Callable[[int, bool], str | None] = no_interface_name):
        if hasattr(target, "write"):
            self._file, self._owns_file = target, False
            self.path = getattr(target, "name", None)
        else:
            self.path = os.fspath(target)
            self._file, self._owns_file = open(self.path, "wb"), True
        self._interfaces: dict[tuple[int, bool, str | None], int] = {}
        self._interface_name = interface_name
        self.count = 0
        shb_options = [_option(ng.PCAPNG_OPT_SHB_USERAPPL, application.encode())]
        if comment:
            shb_options.append(_option(ng.PCAPNG_OPT_COMMENT, comment.encode()))
        shb_options.append(_option(ng.PCAPNG_OPT_ENDOFOPT, b""))
        self._file.write(bytes(ng.SectionHeaderBlockLE(opts=shb_options)))

    def _interface(self, if_idx: int, loopback: bool, name: str | None) -> tuple[int, bytes]:
        """The file's interface number for this (if_idx, loopback, name); the IDB to write first when new."""
        if name is None:
            name = self._name_of(if_idx, loopback)
        key = (if_idx, loopback, name)
        number = self._interfaces.get(key)
        if number is not None:
            return number, b""
        number = self._interfaces[key] = len(self._interfaces)
        description = f"if_idx={if_idx}" + (" loopback" if loopback else "")
        options = [_option(ng.PCAPNG_OPT_IF_NAME, name.encode())] if name is not None else []
        idb = ng.InterfaceDescriptionBlockLE(
            linktype=LINKTYPE_RAW,
            snaplen=SNAPLEN,
            opts=options + [
                _option(ng.PCAPNG_OPT_IF_DESCRIPTION, description.encode()),
                _option(ng.PCAPNG_OPT_IF_TSRESOL, bytes([9])),
                _option(ng.PCAPNG_OPT_ENDOFOPT, b""),
            ],
        )
        return number, bytes(idb)

    def _name_of(self, if_idx: int, loopback: bool) -> str | None:
        name = self._interface_name(if_idx, loopback)
        if name is not None and (not isinstance(name, str) or not name):
            raise ValueError(f"interface_name({if_idx}, {loopback}) gave {name!r}, not a non-empty name or None")
        return name

    def _encode(self, raw: bytes, address: Address | None, wall_ns: int | None, comment: str | None = None,
                interface_name: str | None = None) -> bytes:
        if address is None:
            address = Address()
        if wall_ns is None:
            wall_ns = time.time_ns()
        number, idb = self._interface(address.if_idx, address.loopback, interface_name or None)
        options = _FLAGS_OPTION[bool(address.outbound)] if address.direction_known else b""
        if comment:
            options += _comment_option(comment)
        options += _END_OF_OPTIONS
        length = len(raw)
        padding = _PADDING[length & 3]
        total = 32 + length + len(padding) + len(options)
        head = _EPB_HEAD.pack(ng.PCAPNG_BT_EPB, total, number, wall_ns >> 32, wall_ns & 0xFFFFFFFF, length, length)
        return b"".join((idb, head, raw, padding, options, _EPB_TAIL.pack(total)))

    def write(self, raw: bytes, address: Address | None = None, wall_ns: int | None = None,
              comment: str | None = None, interface_name: str | None = None) -> None:
        """Appends one packet; `wall_ns` is its wall-clock time (default now), `address` gives direction and
        interface, `interface_name` that interface's name where the packet was captured."""
        self._require_open()
        self._file.write(self._encode(bytes(raw), address, wall_ns, comment, interface_name))
        self.count += 1

    def write_custom(self, data: bytes) -> None:
        """Appends a copyable Custom Block of PEN holding `data` (padded to 32 bits)."""
        self._require_open()
        padding = _PADDING[len(data) & 3]
        total = 16 + len(data) + len(padding)
        self._file.write(struct.pack("<III", CUSTOM_BLOCK, total, PEN) + data + padding + _EPB_TAIL.pack(total))

    def write_batch(self, packets: Iterable[tuple]) -> None:
        """Appends (raw, address, wall_ns[, comment[, interface_name]]) tuples in one write, then flushes."""
        self._require_open()
        encode = self._encode
        chunks = [encode(bytes(item[0]), *item[1:]) for item in packets]
        self._file.write(b"".join(chunks))
        self.count += len(chunks)
        self.flush()

    def _require_open(self) -> None:
        if self._file is None:
            raise ValueError(f"the capture file {self.path or '(stream)'} is closed for writing")

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        """Flushes and closes; the file is closed even when the flush fails (and raises)."""
        if self._file is None:
            return
        file, self._file = self._file, None
        try:
            file.flush()
        finally:
            if self._owns_file:
                file.close()

    def __enter__(self) -> "PcapngWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_capture(path: str | os.PathLike, packets: Iterable[tuple], batch: int = 4096,
                  custom: Iterable[bytes] = (), **options) -> int:
    """Writes (raw, address, wall_ns[, comment[, interface_name]]) tuples to a new pcapng file, then a Custom
    Block for each of `custom` (after the packets, so that Wireshark numbers the packets as
    divertgui does); returns the count of packets."""
    packets = iter(packets)
    with PcapngWriter(path, **options) as writer:
        while chunk := list(itertools.islice(packets, batch)):
            writer.write_batch(chunk)
        for data in custom:
            writer.write_custom(data)
        return writer.count


# ---------------------------------------------------------------- link types

_ETHERTYPE_IPV4, _ETHERTYPE_IPV6 = 0x0800, 0x86DD
_VLAN_ETHERTYPES = (0x8100, 0x88A8, 0x9100)
_IP_ETHERTYPES = (_ETHERTYPE_IPV4, _ETHERTYPE_IPV6)
# BSD loopback's address family values for IPv4 and IPv6 across systems.
_NULL_FAMILIES = {2: 4, 10: 6, 24: 6, 28: 6, 30: 6}
_ARPHRD_LOOPBACK = 772
_SLL_OUTGOING = 4


class _Frame(NamedTuple):
    raw: bytes | None
    outbound: bool | None
    loopback: bool | None
    if_idx: int
    skip_reason: str | None


def _skip(reason: str) -> _Frame:
    return _Frame(None, None, None, 0, reason)


def is_malformed(raw: bytes) -> bool:
    """True when the bytes do not start an IPv4 or IPv6 header (a corrupt version byte, say)."""
    return ip_version(raw) not in (4, 6)


def _ip_only(raw: bytes, outbound, loopback, if_idx: int = 0) -> _Frame:
    if is_malformed(raw):
        return _skip("not an IPv4 or IPv6 packet")
    return _Frame(raw, outbound, loopback, if_idx, None)


def _ethernet(frame: bytes) -> _Frame:
    if len(frame) < 14:
        return _skip("Ethernet frame shorter than its header")
    ethertype = int.from_bytes(frame[12:14], "big")
    offset = 14
    while ethertype in _VLAN_ETHERTYPES:
        if len(frame) < offset + 4:
            return _skip("VLAN tag cut short")
        ethertype = int.from_bytes(frame[offset + 2:offset + 4], "big")
        offset += 4
    if ethertype not in _IP_ETHERTYPES:
        return _skip(f"Ethernet type 0x{ethertype:04x} (not IP)")
    # Linux captures on "lo" as Ethernet with both addresses zero.
    loopback = True if frame[:12] == bytes(12) else None
    return _ip_only(frame[offset:], None, loopback)


def _linux_sll(frame: bytes) -> _Frame:
    if len(frame) < 16:
        return _skip("Linux cooked (SLL) frame shorter than its header")
    packet_type, arphrd = struct.unpack_from(">HH", frame)
    protocol = int.from_bytes(frame[14:16], "big")
    if protocol not in _IP_ETHERTYPES:
        return _skip(f"SLL protocol 0x{protocol:04x} (not IP)")
    loopback = arphrd == _ARPHRD_LOOPBACK
    return _ip_only(frame[16:], packet_type == _SLL_OUTGOING, loopback)


def _linux_sll2(frame: bytes) -> _Frame:
    if len(frame) < 20:
        return _skip("Linux cooked (SLL2) frame shorter than its header")
    protocol, _, if_idx, arphrd, packet_type = struct.unpack_from(">HHIHB", frame)
    if protocol not in _IP_ETHERTYPES:
        return _skip(f"SLL2 protocol 0x{protocol:04x} (not IP)")
    loopback = arphrd == _ARPHRD_LOOPBACK
    return _ip_only(frame[20:], packet_type == _SLL_OUTGOING, loopback, if_idx)


def _bsd_loopback(frame: bytes, byte_order: str) -> _Frame:
    if len(frame) < 4:
        return _skip("loopback frame shorter than its header")
    family = int.from_bytes(frame[:4], byte_order)
    if byte_order == "little" and family not in _NULL_FAMILIES:
        # LINKTYPE_NULL's family is in the capturing host's byte order.
        family = int.from_bytes(frame[:4], "big")
    if family not in _NULL_FAMILIES:
        return _skip(f"loopback address family {family} (not IP)")
    return _ip_only(frame[4:], None, True)


def _decode_link(linktype: int, frame: bytes) -> _Frame:
    if linktype in (LINKTYPE_RAW, LINKTYPE_IPV4, LINKTYPE_IPV6):
        # Kept whatever they hold: an edited packet saved here must come back as it was.
        return _Frame(frame, None, None, 0, None)
    if linktype == LINKTYPE_ETHERNET:
        return _ethernet(frame)
    if linktype == LINKTYPE_LINUX_SLL:
        return _linux_sll(frame)
    if linktype == LINKTYPE_LINUX_SLL2:
        return _linux_sll2(frame)
    if linktype == LINKTYPE_NULL:
        return _bsd_loopback(frame, "little")
    if linktype == LINKTYPE_LOOP:
        return _bsd_loopback(frame, "big")
    return _skip(f"link type {linktype} (not supported)")


SUPPORTED_LINKTYPES = frozenset({
    LINKTYPE_NULL, LINKTYPE_ETHERNET, LINKTYPE_RAW, LINKTYPE_LOOP,
    LINKTYPE_LINUX_SLL, LINKTYPE_IPV4, LINKTYPE_IPV6, LINKTYPE_LINUX_SLL2,
})


# ---------------------------------------------------------------- reading

_PCAP_MAGICS = {
    # magic as read little-endian: (byte order of the file, ticks per second)
    0xA1B2C3D4: ("<", 1_000_000),
    0xD4C3B2A1: (">", 1_000_000),
    0xA1B23C4D: ("<", 1_000_000_000),
    0x4D3CB2A1: (">", 1_000_000_000),
}
_SHB_TYPE = ng.PCAPNG_BT_SHB
# The byte-order magic as read little-endian.
_BOM = {ng.BYTE_ORDER_MAGIC: "<", ng.BYTE_ORDER_MAGIC_LE: ">"}


def _open_bytes(source) -> tuple[bytes | mmap.mmap, str | None]:
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), None
    if isinstance(source, io.BufferedReader):
        # An open file (one the capture service opened for a client): mapped, as a path is.
        with source:
            size = os.fstat(source.fileno()).st_size
            data = mmap.mmap(source.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        return data, getattr(source, "name", None)
    if hasattr(source, "read"):
        return source.read(), getattr(source, "name", None)
    path = os.fspath(source)
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                return b"", path
            return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ), path
    except OSError as exc:
        raise CaptureFileError(f"cannot open: {exc.strerror or exc}", 0, path) from exc


class CaptureReader:
    """Iterates over the packets of a pcapng or classic pcap file as CaptureRecords.

    The file's header is checked at construction. Iteration yields every
    packet before a fault, then raises CaptureFileError naming the fault's
    offset. Records that are not IP (ARP, ...) are counted in `skipped`
    by reason, never dropped unseen. The data of each Custom Block of PEN
    met so far is in `custom`; other programs' custom blocks are passed over.
    """

    def __init__(self, source: str | os.PathLike | bytes | BinaryIO, name: str | None = None):
        """`name` is what messages call the file, when `source` is not its path."""
        self._data, self.path = _open_bytes(source)
        self.path = name or self.path
        self.skipped: collections.Counter[str] = collections.Counter()
        self.interfaces: list[Interface] = []
        self.custom: list[bytes] = []
        self.count = 0
        if len(self._data) < 4:
            self._fail("empty file" if not self._data else "file too short for a capture header", 0)
        magic = struct.unpack_from("<I", self._data)[0]
        if magic == _SHB_TYPE:
            self.format = "pcapng"
        elif magic in _PCAP_MAGICS:
            self.format = "pcap"
            self._check_pcap_header()
        else:
            self._fail(f"not a pcap or pcapng file (magic 0x{magic:08x})", 0)

    def _fail(self, message: str, offset: int):
        raise CaptureFileError(message, offset, self.path, self.count)

    def close(self) -> None:
        if isinstance(self._data, mmap.mmap):
            self._data.close()

    def __enter__(self) -> "CaptureReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __iter__(self) -> Iterator[CaptureRecord]:
        records = self._pcapng_records() if self.format == "pcapng" else self._pcap_records()
        for record in records:
            self.count += 1
            yield record

    def _record(self, interface_number: int, interface: Interface, ticks: int, frame: bytes,
                wire_len: int, direction: int, comment: str | None) -> CaptureRecord | None:
        decoded = _decode_link(interface.linktype, frame)
        if decoded.raw is None:
            self.skipped[decoded.skip_reason] += 1
            return None
        outbound = decoded.outbound
        if direction == DIRECTION_OUTBOUND:
            outbound = True
        elif direction == DIRECTION_INBOUND:
            outbound = False
        loopback = decoded.loopback if decoded.loopback is not None else interface.loopback
        seconds, ticks = divmod(ticks, interface.ts_units_per_s)
        timestamp_ns = (seconds + interface.ts_offset_s) * 1_000_000_000 + ticks * 1_000_000_000 // interface.ts_units_per_s
        header_len = len(frame) - len(decoded.raw)
        return CaptureRecord(
            raw=bytes(decoded.raw),
            timestamp_ns=timestamp_ns,
            interface=interface_number,
            if_idx=decoded.if_idx or interface.if_idx,
            outbound=outbound,
            loopback=loopback,
            comment=comment,
            wire_len=max(wire_len - header_len, len(decoded.raw)),
            interface_name=interface.name,
        )

    # classic pcap

    def _check_pcap_header(self) -> None:
        data = self._data
        if len(data) < 24:
            self._fail("pcap file header cut short (24 bytes expected)", len(data))
        order, units = _PCAP_MAGICS[struct.unpack_from("<I", data)[0]]
        self._pcap_order = order
        major, minor, _, _, snaplen, network = struct.unpack_from(order + "HHiIII", data, 4)
        if major != 2:
            self._fail(f"pcap version {major}.{minor} (2.4 expected)", 4)
        linktype = network & 0x0FFFFFFF
        if linktype not in SUPPORTED_LINKTYPES:
            self._fail(f"link type {linktype} (not supported)", 20)
        self._pcap_snaplen = max(snaplen, SNAPLEN)
        self.interfaces.append(Interface(linktype, "", 1, units, 0, linktype in (LINKTYPE_NULL, LINKTYPE_LOOP) or None))

    def _pcap_records(self) -> Iterator[CaptureRecord]:
        data, size = self._data, len(self._data)
        record_header = struct.Struct(self._pcap_order + "IIII")
        interface = self.interfaces[0]
        offset = 24
        while offset < size:
            if size - offset < 16:
                self._fail(f"packet record header cut short ({size - offset} of 16 bytes)", offset)
            seconds, fraction, caplen, wire_len = record_header.unpack_from(data, offset)
            if caplen > self._pcap_snaplen:
                self._fail(f"packet record claims {caplen} captured bytes (corrupt)", offset)
            if fraction >= interface.ts_units_per_s:
                self._fail(f"packet timestamp fraction {fraction} out of range (corrupt)", offset)
            start = offset + 16
            if start + caplen > size:
                self._fail(f"packet data cut short ({size - start} of {caplen} bytes)", offset)
            frame = data[start:start + caplen]
            ticks = seconds * interface.ts_units_per_s + fraction
            record = self._record(0, interface, ticks, frame, wire_len, DIRECTION_UNKNOWN, None)
            offset = start + caplen
            if record is not None:
                yield record

    # pcapng

    def _pcapng_records(self) -> Iterator[CaptureRecord]:
        data, size = self._data, len(self._data)
        order = "<"
        offset = 0
        while offset < size:
            if size - offset < 12:
                self._fail(f"block header cut short ({size - offset} of 12 bytes)", offset)
            block_type = struct.unpack_from(order + "I", data, offset)[0]
            if block_type == _SHB_TYPE:
                order = self._section_order(offset)
            block_len = struct.unpack_from(order + "I", data, offset + 4)[0]
            if block_len < 12 or block_len % 4:
                self._fail(f"block length {block_len} is invalid (corrupt)", offset)
            if offset + block_len > size:
                self._fail(f"block of {block_len} bytes cut short ({size - offset} bytes left)", offset)
            trailer = struct.unpack_from(order + "I", data, offset + block_len - 4)[0]
            if trailer != block_len:
                self._fail(f"block length {block_len} and trailing length {trailer} differ (corrupt)", offset)
            block = data[offset:offset + block_len]
            if block_type == _SHB_TYPE:
                self.interfaces = []
                self._parse_block("section header", ng.SectionHeaderBlockLE if order == "<" else ng.SectionHeaderBlock,
                                  block, offset)
            elif block_type == ng.PCAPNG_BT_IDB:
                self.interfaces.append(self._interface(block, order, offset))
            elif block_type in (ng.PCAPNG_BT_EPB, ng.PCAPNG_BT_PB, ng.PCAPNG_BT_SPB):
                record = self._packet_block(block_type, block, order, offset)
                if record is not None:
                    yield record
            elif block_type in (CUSTOM_BLOCK, CUSTOM_BLOCK_NO_COPY) and block_len >= 16 \
                    and struct.unpack_from(order + "I", block, 8)[0] == PEN:
                self.custom.append(bytes(block[12:-4]))
            offset += block_len

    def _section_order(self, offset: int) -> str:
        if len(self._data) - offset < 12:
            self._fail("section header cut short", offset)
        bom = struct.unpack_from("<I", self._data, offset + 8)[0]
        if bom not in _BOM:
            self._fail(f"section header byte-order magic 0x{bom:08x} is invalid (corrupt)", offset + 8)
        return _BOM[bom]

    def _parse_block(self, what: str, cls, block: bytes, offset: int):
        try:
            return cls(bytes(block))
        except (dpkt.Error, struct.error, ValueError) as exc:
            self._fail(f"{what} block cannot be parsed: {exc} (corrupt)", offset)

    def _interface(self, block: bytes, order: str, offset: int) -> Interface:
        number = len(self.interfaces)
        idb = self._parse_block("interface description",
                                ng.InterfaceDescriptionBlockLE if order == "<" else ng.InterfaceDescriptionBlock,
                                block, offset)
        name, description, units, ts_offset = "", "", 1_000_000, 0
        for opt in idb.opts:
            value = bytes(opt.data)
            if opt.code == ng.PCAPNG_OPT_IF_NAME:
                name = value.rstrip(b"\0").decode("utf-8", "replace")
            elif opt.code == ng.PCAPNG_OPT_IF_DESCRIPTION:
                description = value.rstrip(b"\0").decode("utf-8", "replace")
            elif opt.code == ng.PCAPNG_OPT_IF_TSRESOL and value:
                exponent = value[0] & 0x7F
                if exponent > 60:
                    self._fail(f"interface {number} timestamp resolution 0x{value[0]:02x} is invalid", offset)
                units = 2 ** exponent if value[0] & 0x80 else 10 ** exponent
            elif opt.code == ng.PCAPNG_OPT_IF_TSOFFSET and len(value) == 8:
                ts_offset = struct.unpack(order + "q", value)[0]
        recorded = _IF_IDX_DESCRIPTION.search(description)
        if recorded:
            if_idx, loopback = int(recorded.group(1)), "loopback" in description.split()
        else:
            if_idx, loopback = number + 1, (True if name == "lo" else None)
        if idb.linktype in (LINKTYPE_NULL, LINKTYPE_LOOP):
            loopback = True
        return Interface(idb.linktype, name, if_idx, units, ts_offset, loopback)

    def _packet_block(self, block_type: int, block: bytes, order: str, offset: int) -> CaptureRecord | None:
        block_len = len(block)
        if block_type == ng.PCAPNG_BT_SPB:
            if block_len < 16:
                self._fail("simple packet block shorter than its header", offset)
            wire_len = struct.unpack_from(order + "I", block, 8)[0]
            number, ticks = 0, 0
            caplen = min(wire_len, block_len - 16)
            start, options_at = 12, block_len - 4
        else:
            if block_len < 32:
                self._fail("packet block shorter than its header", offset)
            if block_type == ng.PCAPNG_BT_EPB:
                number, high, low, caplen, wire_len = struct.unpack_from(order + "IIIII", block, 8)
            else:
                number, _, high, low, caplen, wire_len = struct.unpack_from(order + "HHIIII", block, 8)
            ticks = high << 32 | low
            start = 28
            options_at = start + caplen + (-caplen & 3)
            if options_at > block_len - 4:
                self._fail(f"packet block claims {caplen} captured bytes, more than the block holds (corrupt)", offset)
        if number >= len(self.interfaces):
            self._fail(f"packet refers to interface {number}, but {len(self.interfaces)} are described", offset)
        direction, comment = self._packet_options(block, options_at, order, offset)
        return self._record(number, self.interfaces[number], ticks, block[start:start + caplen],
                            wire_len, direction, comment)

    def _packet_options(self, block: bytes, at: int, order: str, offset: int) -> tuple[int, str | None]:
        end = len(block) - 4
        direction, comment = DIRECTION_UNKNOWN, None
        while at + 4 <= end:
            code, length = struct.unpack_from(order + "HH", block, at)
            if code == ng.PCAPNG_OPT_ENDOFOPT:
                break
            value_at = at + 4
            if value_at + length > end:
                self._fail(f"packet option {code} of {length} bytes overruns its block (corrupt)", offset + at)
            if code == EPB_OPT_FLAGS and length == 4:
                direction = struct.unpack_from(order + "I", block, value_at)[0] & 3
            elif code == ng.PCAPNG_OPT_COMMENT:
                comment = bytes(block[value_at:value_at + length]).decode("utf-8", "replace")
            at = value_at + length + (-length & 3)
        return direction, comment


def iter_capture(source: str | os.PathLike | bytes | BinaryIO) -> Iterator[CaptureRecord]:
    """Yields a file's packets; a fault raises CaptureFileError after the packets before it."""
    reader = CaptureReader(source)
    try:
        yield from reader
    finally:
        reader.close()


def read_capture(source: str | os.PathLike | bytes | BinaryIO) -> list[CaptureRecord]:
    """All packets of a file; on a fault the CaptureFileError carries the packets before it in `records`."""
    records: list[CaptureRecord] = []
    try:
        for record in iter_capture(source):
            records.append(record)
    except CaptureFileError as error:
        error.records = records
        raise
    return records
