"""The bpf() system call through ctypes: maps, program loading, cgroup links.

Each function fills `union bpf_attr` (linux/bpf.h) at the offsets the
kernel defines and raises BpfError with the kernel's errno, and for a
refused program the verifier's own explanation.
"""

from __future__ import annotations

import ctypes
import os
import platform
import struct

from divertgui.engine.errors import BpfError

_SYSCALL_NUMBER = {"x86_64": 321, "aarch64": 280, "armv7l": 386, "riscv64": 280, "ppc64le": 361, "s390x": 351}
_ATTR_SIZE = 144

# Commands (enum bpf_cmd).
MAP_CREATE, MAP_LOOKUP_ELEM, PROG_LOAD, PROG_GET_FD_BY_ID, OBJ_GET_INFO_BY_FD, PROG_QUERY = 0, 1, 5, 13, 15, 16
LINK_CREATE, LINK_GET_FD_BY_ID, LINK_GET_NEXT_ID, LINK_DETACH = 28, 30, 31, 34
# Map, program, attach and link types used here.
MAP_TYPE_LRU_HASH, MAP_TYPE_RINGBUF = 9, 27
PROG_TYPE_CGROUP_SKB, PROG_TYPE_CGROUP_SOCK, PROG_TYPE_SOCK_OPS, PROG_TYPE_CGROUP_SOCK_ADDR = 8, 9, 13, 18
ATTACH_INET_INGRESS, ATTACH_INET_EGRESS = 0, 1
ATTACH_INET_SOCK_CREATE, ATTACH_SOCK_OPS, ATTACH_INET4_BIND, ATTACH_INET6_BIND = 2, 3, 8, 9
ATTACH_INET4_CONNECT, ATTACH_INET6_CONNECT, ATTACH_INET_SOCK_RELEASE = 10, 11, 34
ATTACH_UDP4_SENDMSG, ATTACH_UDP6_SENDMSG = 14, 15
LINK_TYPE_CGROUP = 3

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _bpf(command: int, attr: ctypes.Array, what: str) -> int:
    number = _SYSCALL_NUMBER.get(platform.machine())
    if number is None:
        raise BpfError(0, f"the bpf() system call number on {platform.machine()} is not known")
    result = _libc.syscall(number, command, ctypes.byref(attr), _ATTR_SIZE)
    if result < 0:
        errno_ = ctypes.get_errno()
        raise BpfError(errno_, f"{what}: {os.strerror(errno_)}")
    return result


def _attr(fmt: str, *values, offset: int = 0) -> ctypes.Array:
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    struct.pack_into(fmt, attr, offset, *values)
    return attr


def _create_map(map_type: int, key_size: int, value_size: int, entries: int, name: str) -> int:
    attr = _attr("<IIII", map_type, key_size, value_size, entries)
    ctypes.memmove(ctypes.addressof(attr) + 28, name.encode()[:15], len(name.encode()[:15]))
    return _bpf(MAP_CREATE, attr, f"cannot create the eBPF map {name}")


def create_ringbuf(size: int, name: str) -> int:
    """A ring buffer map of `size` bytes (a power of two, a multiple of the page size)."""
    return _create_map(MAP_TYPE_RINGBUF, 0, 0, size, name)


def create_lru_hash(entries: int, value_size: int, name: str, key_size: int = 8) -> int:
    """A map from keys to values that forgets the least recently used when full."""
    return _create_map(MAP_TYPE_LRU_HASH, key_size, value_size, entries, name)


def lookup_elem(map_fd: int, key: bytes, value_size: int) -> bytes | None:
    """The value of `key` in the map, None when it holds no such key."""
    key_buffer = ctypes.create_string_buffer(key, len(key))
    value = ctypes.create_string_buffer(value_size)
    attr = _attr("<IIQQ", map_fd, 0, ctypes.addressof(key_buffer), ctypes.addressof(value))
    try:
        _bpf(MAP_LOOKUP_ELEM, attr, "cannot look up an eBPF map entry")
    except BpfError as exc:
        if exc.errno == 2:  # ENOENT: no such key
            return None
        raise
    return value.raw


def load_program(prog_type: int, attach_type: int, code: bytes, name: str) -> int:
    """The descriptor of the loaded program; BpfError carries the verifier's log if it refuses."""
    insns = ctypes.create_string_buffer(code, len(code))
    license_ = ctypes.create_string_buffer(b"GPL")
    log = ctypes.create_string_buffer(1 << 20)
    attr = ctypes.create_string_buffer(_ATTR_SIZE)
    struct.pack_into("<IIQQIIQ", attr, 0, prog_type, len(code) // 8, ctypes.addressof(insns),
                     ctypes.addressof(license_), 1, len(log), ctypes.addressof(log))
    ctypes.memmove(ctypes.addressof(attr) + 48, name.encode()[:15], len(name.encode()[:15]))
    struct.pack_into("<I", attr, 68, attach_type)
    try:
        return _bpf(PROG_LOAD, attr, f"the kernel refused the eBPF program {name}")
    except BpfError as exc:
        raise BpfError(exc.errno, exc.strerror, log.value.decode(errors="replace")) from None


def attach_cgroup(prog_fd: int, cgroup_fd: int, attach_type: int) -> int:
    """A link attaching the program to the cgroup; closing its last descriptor detaches it."""
    return _bpf(LINK_CREATE, _attr("<IIII", prog_fd, cgroup_fd, attach_type, 0),
                "cannot attach the eBPF program to the cgroup")


def detach_link(link_fd: int) -> None:
    _bpf(LINK_DETACH, _attr("<I", link_fd), "cannot detach the eBPF link")


def query_cgroup(cgroup_fd: int, attach_type: int) -> list[int]:
    """Ids of the programs attached to the cgroup at `attach_type`."""
    ids = (ctypes.c_uint32 * 64)()
    attr = _attr("<IIIIQI", cgroup_fd, attach_type, 0, 0, ctypes.addressof(ids), 64)
    _bpf(PROG_QUERY, attr, "cannot query the cgroup's eBPF programs")
    count = struct.unpack_from("<I", attr, 24)[0]
    return list(ids[:min(count, 64)])


def link_ids() -> list[int]:
    """Every eBPF link on the machine."""
    found, current = [], 0
    while True:
        attr = _attr("<I", current)
        try:
            _bpf(LINK_GET_NEXT_ID, attr, "cannot list eBPF links")
        except BpfError as exc:
            if exc.errno == 2:  # ENOENT: no more
                return found
            raise
        current = struct.unpack_from("<I", attr, 4)[0]
        found.append(current)


def link_fd(link_id: int) -> int:
    return _bpf(LINK_GET_FD_BY_ID, _attr("<I", link_id), f"cannot open eBPF link {link_id}")


def prog_fd(prog_id: int) -> int:
    return _bpf(PROG_GET_FD_BY_ID, _attr("<I", prog_id), f"cannot open eBPF program {prog_id}")


def _info(fd: int, size: int) -> bytes:
    info = ctypes.create_string_buffer(size)
    _bpf(OBJ_GET_INFO_BY_FD, _attr("<IIQ", fd, size, ctypes.addressof(info)), "cannot read eBPF object info")
    return info.raw


def link_info(fd: int) -> tuple[int, int, int, int]:
    """(link type, program id, cgroup id, attach type) of a link."""
    raw = _info(fd, 48)
    link_type, _link_id, prog_id = struct.unpack_from("<III", raw, 0)
    cgroup_id, attach_type = struct.unpack_from("<QI", raw, 16)
    return link_type, prog_id, cgroup_id, attach_type


def prog_name(fd: int) -> str:
    raw = _info(fd, 232)
    return raw[64:80].split(b"\0", 1)[0].decode(errors="replace")
