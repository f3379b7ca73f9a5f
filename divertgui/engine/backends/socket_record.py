"""The record a SOCKET-layer eBPF program writes for one socket operation.

It lives on the program's stack at RECORD (relative to the frame pointer),
is what the handle's filter is evaluated on in the kernel, and is copied
whole into the ring buffer; `to_address` turns it into the event's Address.
Addresses are four host-order 32-bit words, most significant first, IPv4
as ::ffff:a.b.c.d. `process_name` is the kernel's name (comm) of the process,
NUL-padded, or zeros where the program knew no process.
"""

from __future__ import annotations

import struct

from divertgui.engine.address import Address, EndpointData, Event, Layer

RECORD = -96            # the record's place below the frame pointer
SIZE = 96
COMM_SIZE = 16          # TASK_COMM_LEN: a process name with its NUL
_LAYOUT = struct.Struct(f"<QQQII4I4IHHBBBBBB6x{COMM_SIZE}s")
OFFSET = {
    "timestamp": 0, "endpoint_id": 8, "parent_endpoint_id": 16, "process_id": 24, "event": 28,
    "local_addr": 32, "remote_addr": 48, "local_port": 64, "remote_port": 66,
    "protocol": 68, "ipv6": 69, "outbound": 70, "loopback": 71, "blocked": 72, "socket_closed": 73,
    "process_name": 80,
}
assert _LAYOUT.size == SIZE


def _address(words) -> int:
    return words[0] << 96 | words[1] << 64 | words[2] << 32 | words[3]


def to_address(raw: bytes) -> tuple[Address, bool]:
    """(the event's address, whether the kernel refused the operation)."""
    values = _LAYOUT.unpack_from(raw)
    (timestamp, endpoint_id, parent_id, pid, event), local, remote = values[:5], values[5:9], values[9:13]
    local_port, remote_port, protocol, ipv6, outbound, loopback, blocked, _closed, comm = values[13:]
    data = EndpointData(endpoint_id=endpoint_id, parent_endpoint_id=parent_id, process_id=pid,
                        local_addr=_address(local), remote_addr=_address(remote),
                        local_port=local_port, remote_port=remote_port, protocol=protocol,
                        process_name=comm.split(b"\0", 1)[0].decode(errors="replace"))
    layer = Layer.FLOW if event in (Event.FLOW_ESTABLISHED, Event.FLOW_DELETED) else Layer.SOCKET
    address = Address(layer=layer, event=Event(event), timestamp=timestamp, outbound=bool(outbound),
                      loopback=bool(loopback), ipv6=bool(ipv6), sniffed=not blocked, flow=data)
    return address, bool(blocked)


def socket_closed(raw: bytes) -> bool:
    """Whether the record says only that a socket with UDP flows closed (its endpoint id is
    the socket's): the FLOW layer reports each of those flows deleted."""
    return bool(raw[OFFSET["socket_closed"]])
