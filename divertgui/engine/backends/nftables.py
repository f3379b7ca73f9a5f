"""nf_tables over netlink: the messages that make and remove tables, chains
and rules, their expressions, and the dumps that read them back.

Layouts are those of linux/netfilter/nf_tables.h, nf_tables_compat.h,
xt_NFQUEUE.h and xt_bpf.h. Changes go to the kernel as one batch
(NFNL_MSG_BATCH_BEGIN ... END), which it applies whole or not at all.
Numbers inside nf_tables attributes are big-endian, but register data
compared with a packet's meta values (the mark, a route type) is in host
order, as the kernel keeps those; the x_tables structures of the compat
expressions are in host order too.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from typing import Iterable, NamedTuple

from divertgui.engine.errors import NetlinkError

from . import netlink
from .netlink import (NLA_F_NESTED, NLM_F_APPEND, NLM_F_CREATE, NLM_F_DUMP, NLM_F_DUMP_INTR, NLMSGERR_CODE, NLMSGHDR,
                      attribute, iter_attributes, iter_messages)

NFNL_SUBSYS_NFTABLES = 10
NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END = 0x10, 0x11
NFPROTO_IPV4, NFPROTO_IPV6 = 2, 10
FAMILIES = {4: NFPROTO_IPV4, 6: NFPROTO_IPV6}


# enum nf_tables_msg_types
NEWTABLE, GETTABLE, DELTABLE, NEWCHAIN, GETCHAIN, DELCHAIN, NEWRULE, GETRULE, DELRULE = range(9)

# Attributes of tables, chains, hooks, rules and expressions
TABLE_NAME = 1
CHAIN_TABLE, CHAIN_HANDLE, CHAIN_NAME, CHAIN_HOOK, CHAIN_POLICY, CHAIN_USE, CHAIN_TYPE = 1, 2, 3, 4, 5, 6, 7
HOOK_HOOKNUM, HOOK_PRIORITY = 1, 2
RULE_TABLE, RULE_CHAIN, RULE_HANDLE, RULE_EXPRESSIONS, RULE_COMPAT, RULE_POSITION = 1, 2, 3, 4, 5, 6
LIST_ELEM = 1
EXPR_NAME, EXPR_DATA = 1, 2
DATA_VALUE, DATA_VERDICT = 1, 2
VERDICT_CODE, VERDICT_CHAIN = 1, 2

# Registers: the verdict, and the first 16-byte data register.
REG_VERDICT, REG_1 = 0, 1
# Verdict codes (linux/netfilter.h and enum nft_verdicts)
NF_DROP, NF_ACCEPT = 0, 1
NFT_CONTINUE, NFT_BREAK, NFT_JUMP, NFT_GOTO, NFT_RETURN = -1, -2, -3, -4, -5

META_DREG, META_KEY = 1, 2
META_MARK, META_IIFNAME, META_OIFNAME, META_L4PROTO = 3, 6, 7, 16
PAYLOAD_DREG, PAYLOAD_BASE, PAYLOAD_OFFSET, PAYLOAD_LEN = 1, 2, 3, 4
PAYLOAD_NETWORK_HEADER, PAYLOAD_TRANSPORT_HEADER = 1, 2
CMP_SREG, CMP_OP, CMP_DATA = 1, 2, 3
CMP_EQ, CMP_NEQ, CMP_LT, CMP_LTE, CMP_GT, CMP_GTE = range(6)
BITWISE_SREG, BITWISE_DREG, BITWISE_LEN, BITWISE_MASK, BITWISE_XOR = 1, 2, 3, 4, 5
BYTEORDER_SREG, BYTEORDER_DREG, BYTEORDER_OP, BYTEORDER_LEN, BYTEORDER_SIZE = 1, 2, 3, 4, 5
BYTEORDER_HTON = 1
COUNTER_BYTES, COUNTER_PACKETS = 1, 2
LOG_GROUP, LOG_SNAPLEN, LOG_QTHRESHOLD = 1, 3, 4
FIB_DREG, FIB_RESULT, FIB_FLAGS = 1, 2, 3
CT_DREG, CT_KEY = 1, 2
CT_STATE = 0
FIB_RESULT_ADDRTYPE, FIB_F_DADDR = 3, 0x2
RTN_LOCAL = 2                                 # linux/rtnetlink.h route type
COMPAT_NAME, COMPAT_REV, COMPAT_INFO = 1, 2, 3  # NFTA_MATCH_* and NFTA_TARGET_* alike

IFNAMSIZ = 16
HOST_U32 = struct.Struct("=I")
BE32 = struct.Struct("!I")
BE32_SIGNED = struct.Struct("!i")
BE16 = struct.Struct("!H")
BE64 = struct.Struct("!Q")

# struct xt_NFQ_info_v3 (queuenum, queues_total, flags), padded to XT_ALIGN (8 bytes).
NFQUEUE_INFO_V3 = struct.Struct("=HHH2x")
NFQ_FLAG_BYPASS = 0x01
# struct xt_bpf_info_v1: mode, bpf_program_num_elem, fd, 64 sock_filters, and the
# kernel's own program pointer (aligned to 8): 528 bytes.
BPF_INFO_V1_HEAD = struct.Struct("=HHi")
SOCK_FILTER = struct.Struct("=HBBI")
XT_BPF_MAX_NUM_INSTR = 64
XT_BPF_MODE_BYTECODE = 0
BPF_INFO_V1_SIZE = BPF_INFO_V1_HEAD.size + XT_BPF_MAX_NUM_INSTR * SOCK_FILTER.size + 8

RECEIVE_TIMEOUT = 5.0
DUMPED = {GETTABLE: "tables", GETCHAIN: "chains", GETRULE: "rules"}


def _string(text: str) -> bytes:
    return text.encode() + b"\0"


def nested(kind: int, value: bytes) -> bytes:
    return attribute(kind | NLA_F_NESTED, value)


# -- expressions -----------------------------------------------------------------

def expression(name: str, data: bytes) -> bytes:
    """One element of a rule's expression list."""
    return nested(LIST_ELEM, attribute(EXPR_NAME, _string(name)) + nested(EXPR_DATA, data))


def meta(key: int) -> bytes:
    """Loads a meta value (the mark, an interface name) into register 1."""
    return expression("meta", attribute(META_DREG, BE32.pack(REG_1)) + attribute(META_KEY, BE32.pack(key)))


def payload(base: int, offset: int, length: int) -> bytes:
    """Loads length bytes at offset of the network or transport header (PAYLOAD_*_HEADER) into
    register 1; the rule ends here when the packet has none there."""
    return expression("payload", attribute(PAYLOAD_DREG, BE32.pack(REG_1)) + attribute(PAYLOAD_BASE, BE32.pack(base))
                      + attribute(PAYLOAD_OFFSET, BE32.pack(offset)) + attribute(PAYLOAD_LEN, BE32.pack(length)))


def compare(op: int, value: bytes) -> bytes:
    """Compares the first len(value) bytes of register 1 with value; the rule ends here if false."""
    return expression("cmp", attribute(CMP_SREG, BE32.pack(REG_1)) + attribute(CMP_OP, BE32.pack(op))
                      + nested(CMP_DATA, attribute(DATA_VALUE, value)))


def bitwise_and(mask: bytes) -> bytes:
    """Register 1 = register 1 & mask (over len(mask) bytes)."""
    return expression("bitwise", attribute(BITWISE_SREG, BE32.pack(REG_1)) + attribute(BITWISE_DREG, BE32.pack(REG_1))
                      + attribute(BITWISE_LEN, BE32.pack(len(mask)))
                      + nested(BITWISE_MASK, attribute(DATA_VALUE, mask))
                      + nested(BITWISE_XOR, attribute(DATA_VALUE, bytes(len(mask)))))


def to_big_endian_u32() -> bytes:
    """Register 1's host-order 32-bit value in network order, so that cmp's byte-wise
    ordering (lt, lte, gt, gte) is the numeric one."""
    return expression("byteorder", attribute(BYTEORDER_SREG, BE32.pack(REG_1))
                      + attribute(BYTEORDER_DREG, BE32.pack(REG_1)) + attribute(BYTEORDER_OP, BE32.pack(BYTEORDER_HTON))
                      + attribute(BYTEORDER_LEN, BE32.pack(4)) + attribute(BYTEORDER_SIZE, BE32.pack(4)))


def destination_address_type() -> bytes:
    """Loads the route type of the packet's destination address (RTN_*, host order) into register 1."""
    return expression("fib", attribute(FIB_DREG, BE32.pack(REG_1)) + attribute(FIB_RESULT, BE32.pack(FIB_RESULT_ADDRTYPE))
                      + attribute(FIB_FLAGS, BE32.pack(FIB_F_DADDR)))


def conntrack_state() -> bytes:
    """Loads the packet's conntrack state into register 1. The expression's presence in a rule
    turns conntrack on for the table's family in the network namespace (with its
    defragmentation, which IPv6 otherwise does only after the INPUT hook) until the rule goes."""
    return expression("ct", attribute(CT_DREG, BE32.pack(REG_1)) + attribute(CT_KEY, BE32.pack(CT_STATE)))


def verdict(code: int, chain: str | None = None) -> bytes:
    inner = attribute(VERDICT_CODE, BE32_SIGNED.pack(code))
    if chain is not None:
        inner += attribute(VERDICT_CHAIN, _string(chain))
    return expression("immediate", attribute(1, BE32.pack(REG_VERDICT))
                      + nested(2, nested(DATA_VERDICT, inner)))


def counter() -> bytes:
    return expression("counter", attribute(COUNTER_BYTES, BE64.pack(0)) + attribute(COUNTER_PACKETS, BE64.pack(0)))


def log_to_group(group: int, snaplen: int) -> bytes:
    """nfnetlink_log: a copy of up to snaplen bytes to the group; the packet goes on."""
    return expression("log", attribute(LOG_GROUP, BE16.pack(group)) + attribute(LOG_SNAPLEN, BE32.pack(snaplen))
                      + attribute(LOG_QTHRESHOLD, BE16.pack(0)))


def xt_match(name: str, revision: int, info: bytes) -> bytes:
    """An x_tables match run by nft_compat."""
    return expression("match", attribute(COMPAT_NAME, _string(name)) + attribute(COMPAT_REV, BE32.pack(revision))
                      + attribute(COMPAT_INFO, info))


def xt_target(name: str, revision: int, info: bytes) -> bytes:
    """An x_tables target run by nft_compat."""
    return expression("target", attribute(COMPAT_NAME, _string(name)) + attribute(COMPAT_REV, BE32.pack(revision))
                      + attribute(COMPAT_INFO, info))


def nfqueue_target(first: int, count: int, bypass: bool) -> bytes:
    """The NFQUEUE target (revision 3): queues first..first+count-1, the flow's hash choosing one."""
    return xt_target("NFQUEUE", 3, NFQUEUE_INFO_V3.pack(first, count, NFQ_FLAG_BYPASS if bypass else 0))


def bpf_match(program: Iterable[tuple[int, int, int, int]]) -> bytes:
    """The bpf match (revision 1, bytecode mode) running a classic BPF program of (code, jt, jf, k)."""
    program = list(program)
    if not 0 < len(program) <= XT_BPF_MAX_NUM_INSTR:
        raise ValueError(f"the bpf match runs 1 to {XT_BPF_MAX_NUM_INSTR} instructions, not {len(program)}")
    info = bytearray(BPF_INFO_V1_SIZE)
    BPF_INFO_V1_HEAD.pack_into(info, 0, XT_BPF_MODE_BYTECODE, len(program), 0)
    for i, (code, jt, jf, k) in enumerate(program):
        SOCK_FILTER.pack_into(info, BPF_INFO_V1_HEAD.size + i * SOCK_FILTER.size, code, jt, jf, k)
    return xt_match("bpf", 1, bytes(info))


def interface_name(name: str) -> bytes:
    """An interface name as meta iifname/oifname load it: NUL-padded to IFNAMSIZ."""
    encoded = name.encode()
    if len(encoded) >= IFNAMSIZ:
        raise ValueError(f"interface name {name!r} is longer than {IFNAMSIZ - 1} bytes")
    return encoded.ljust(IFNAMSIZ, b"\0")


# -- messages ----------------------------------------------------------------------

def _message(kind: int, family: int, attrs: bytes, flags: int, seq: int = 0) -> bytes:
    return netlink.message(NFNL_SUBSYS_NFTABLES, kind, 0, attrs, family=family, flags=flags, seq=seq)


class Change(NamedTuple):
    """One message of a batch: the kind and attributes, what it does and what of the kernel it
    needs ("" when nothing beyond nf_tables), for errors."""

    kind: int
    family: int
    attrs: bytes
    flags: int
    what: str
    needs: str = ""


def new_table(family: int, table: str) -> Change:
    return Change(NEWTABLE, family, attribute(TABLE_NAME, _string(table)), NLM_F_CREATE,
                  f"add table {table}")


def delete_table(family: int, table: str) -> Change:
    return Change(DELTABLE, family, attribute(TABLE_NAME, _string(table)), 0, f"delete table {table}")


def new_chain(family: int, table: str, chain: str, hook: tuple[int, int, str] | None = None) -> Change:
    """A chain; with hook = (hook number, priority, type) a base chain with policy accept."""
    attrs = attribute(CHAIN_TABLE, _string(table)) + attribute(CHAIN_NAME, _string(chain))
    if hook is not None:
        number, priority, kind = hook
        attrs += nested(CHAIN_HOOK, attribute(HOOK_HOOKNUM, BE32.pack(number))
                        + attribute(HOOK_PRIORITY, BE32_SIGNED.pack(priority)))
        attrs += attribute(CHAIN_POLICY, BE32.pack(NF_ACCEPT)) + attribute(CHAIN_TYPE, _string(kind))
    return Change(NEWCHAIN, family, attrs, NLM_F_CREATE, f"add chain {table} {chain}")


def delete_chain(family: int, table: str, chain: str) -> Change:
    return Change(DELCHAIN, family, attribute(CHAIN_TABLE, _string(table)) + attribute(CHAIN_NAME, _string(chain)),
                  0, f"delete chain {table} {chain}")


def new_rule(family: int, table: str, chain: str, expressions: list[bytes], *, after: int | None = None,
             first: bool = False, what: str = "", needs: str = "") -> Change:
    """A rule at the end of the chain, after the rule whose handle is `after`, or first of all."""
    attrs = (attribute(RULE_TABLE, _string(table)) + attribute(RULE_CHAIN, _string(chain))
             + nested(RULE_EXPRESSIONS, b"".join(expressions)))
    flags = NLM_F_CREATE
    if after is not None:
        attrs += attribute(RULE_POSITION, BE64.pack(after))
        flags |= NLM_F_APPEND
    elif not first:
        flags |= NLM_F_APPEND
    return Change(NEWRULE, family, attrs, flags, what or f"add rule to {table} {chain}", needs)


def delete_rule(family: int, table: str, chain: str, handle: int) -> Change:
    return Change(DELRULE, family, attribute(RULE_TABLE, _string(table)) + attribute(RULE_CHAIN, _string(chain))
                  + attribute(RULE_HANDLE, BE64.pack(handle)), 0, f"delete rule {handle} of {table} {chain}")


# -- reading back ---------------------------------------------------------------

class DumpedChain(NamedTuple):
    name: str
    hook: int | None        # NF_INET_* of a base chain, None for a chain reached by jumps


class DumpedRule(NamedTuple):
    chain: str
    handle: int
    jump: str | None        # the chain an immediate jump or goto names
    packets: int | None     # the counter's packets, None without a counter
    target: str | None = None   # what the rule does with a packet: an x_tables target's name, "log" or "drop"


def _attributes(data, offset: int, end: int) -> dict[int, memoryview]:
    return {kind: value for kind, value in iter_attributes(data, offset, end)}


def _text(value) -> str:
    return bytes(value).split(b"\0", 1)[0].decode(errors="replace")


def parse_chain(data, body: int, end: int) -> tuple[str, DumpedChain]:
    """(table, chain) of a NEWCHAIN message of a dump."""
    attrs = _attributes(data, body + netlink.NFGENMSG.size, end)
    hook = None
    if CHAIN_HOOK in attrs:
        hooks = _attributes(attrs[CHAIN_HOOK], 0, len(attrs[CHAIN_HOOK]))
        hook = BE32.unpack(hooks[HOOK_HOOKNUM])[0] if HOOK_HOOKNUM in hooks else None
    return _text(attrs.get(CHAIN_TABLE, b"")), DumpedChain(_text(attrs.get(CHAIN_NAME, b"")), hook)


def parse_rule(data, body: int, end: int) -> tuple[str, DumpedRule]:
    """(table, rule) of a NEWRULE message of a dump: its jump, counter and target, if any."""
    attrs = _attributes(data, body + netlink.NFGENMSG.size, end)
    jump = packets = target = None
    expressions = attrs.get(RULE_EXPRESSIONS, memoryview(b""))
    for kind, element in iter_attributes(expressions, 0, len(expressions)):
        if kind != LIST_ELEM:
            continue
        parts = _attributes(element, 0, len(element))
        name, values = _text(parts.get(EXPR_NAME, b"")), parts.get(EXPR_DATA, memoryview(b""))
        fields = _attributes(values, 0, len(values))
        if name == "counter" and COUNTER_PACKETS in fields:
            packets = BE64.unpack(fields[COUNTER_PACKETS])[0]
        elif name == "target" and COMPAT_NAME in fields:
            target = _text(fields[COMPAT_NAME])
        elif name == "log":
            target = "log"
        elif name == "immediate" and 2 in fields:
            data_attrs = _attributes(fields[2], 0, len(fields[2]))
            if DATA_VERDICT in data_attrs:
                verdict_attrs = _attributes(data_attrs[DATA_VERDICT], 0, len(data_attrs[DATA_VERDICT]))
                if VERDICT_CHAIN in verdict_attrs:
                    jump = _text(verdict_attrs[VERDICT_CHAIN])
                elif VERDICT_CODE in verdict_attrs and BE32_SIGNED.unpack(verdict_attrs[VERDICT_CODE])[0] == NF_DROP:
                    target = "drop"
    return _text(attrs.get(RULE_TABLE, b"")), DumpedRule(_text(attrs.get(RULE_CHAIN, b"")),
                                                         BE64.unpack(attrs[RULE_HANDLE])[0], jump, packets, target)


# -- the socket ------------------------------------------------------------------

class NftablesError(NetlinkError):
    """The kernel refused a change or a dump; `what` says which message, `needs` what of the
    kernel that message needs, `batch_start` whether it was a batch's opening message (which
    a kernel without nf_tables refuses)."""

    def __init__(self, code: int, what: str, needs: str = "", batch_start: bool = False):
        needing = f" needing {needs}" if needs else ""
        super().__init__(code, f"nf_tables refused to {what}{needing}: {os.strerror(code)}")
        self.what, self.needs, self.batch_start = what, needs, batch_start


class NftablesSocket:
    """A NETLINK_NETFILTER socket for nf_tables requests, in the calling thread's network namespace."""

    def __init__(self):
        try:
            self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, netlink.NETLINK_NETFILTER)
        except PermissionError as exc:
            raise PermissionError(exc.errno, "opening a netfilter netlink socket needs CAP_NET_ADMIN") from exc
        self.sock.bind((0, 0))
        self.sock.settimeout(RECEIVE_TIMEOUT)
        self._buffer = bytearray(1 << 20)
        self._seq = int.from_bytes(os.urandom(2), "big") << 8

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        self.sock.close()

    def _next_seq(self) -> int:
        self._seq = (self._seq + 1) & 0x7FFFFFFF
        return self._seq

    def _receive(self) -> int:
        try:
            return self.sock.recv_into(self._buffer)
        except socket.timeout:
            raise NetlinkError(errno.ETIMEDOUT, "nf_tables did not answer within "
                                                f"{RECEIVE_TIMEOUT:g} s") from None

    def apply(self, changes: list[Change]) -> None:
        """Sends the changes as one batch, which the kernel applies whole or not at all.

        Raises NftablesError for the first message the kernel refused.
        """
        if not changes:
            return
        begin_seq = self._next_seq()
        control = netlink.NFGENMSG.pack(socket.AF_UNSPEC, netlink.NFNETLINK_V0, NFNL_SUBSYS_NFTABLES)
        parts = [NLMSGHDR.pack(NLMSGHDR.size + len(control), NFNL_MSG_BATCH_BEGIN, netlink.NLM_F_REQUEST,
                               begin_seq, 0) + control]
        waiting: dict[int, Change] = {}
        for change in changes:
            seq = self._next_seq()
            waiting[seq] = change
            parts.append(_message(change.kind, change.family, change.attrs,
                                  netlink.NLM_F_REQUEST | netlink.NLM_F_ACK | change.flags, seq))
        end_seq = self._next_seq()
        parts.append(NLMSGHDR.pack(NLMSGHDR.size + len(control), NFNL_MSG_BATCH_END, netlink.NLM_F_REQUEST,
                                   end_seq, 0) + control)
        self.sock.send(b"".join(parts))
        refused: list[tuple[int, int, Change]] = []
        while waiting:
            length = self._receive()
            for msg_type, _flags, seq, body, _end in iter_messages(self._buffer, length):
                if msg_type != netlink.NLMSG_ERROR:
                    continue
                code = -NLMSGERR_CODE.unpack_from(self._buffer, body)[0]
                if seq in (begin_seq, end_seq):
                    if code:
                        # The whole batch went unread: the kernel has no nf_tables (EOPNOTSUPP) or refused it.
                        starting = seq == begin_seq
                        raise NftablesError(code, "start a batch of changes" if starting
                                            else "apply a batch of changes", batch_start=starting)
                    continue
                if seq in waiting:
                    change = waiting.pop(seq)
                    if code:
                        refused.append((seq, code, change))
        if refused:
            _seq, code, change = min(refused)
            raise NftablesError(code, change.what, change.needs)

    def dump(self, kind: int, family: int, attrs: bytes = b"") -> list[tuple[bytes, int, int]]:
        """Every message (data, body offset, end) a GET dump returns; retried while a change
        in the middle makes it inconsistent."""
        for _attempt in range(10):
            seq = self._next_seq()
            self.sock.send(_message(kind, family, attrs, netlink.NLM_F_REQUEST | NLM_F_DUMP, seq))
            found, interrupted, done = [], False, False
            while not done:
                length = self._receive()
                data = bytes(self._buffer[:length])
                for msg_type, flags, msg_seq, body, end in iter_messages(data, length):
                    if msg_seq != seq:
                        continue
                    if flags & NLM_F_DUMP_INTR:
                        interrupted = True
                    if msg_type == netlink.NLMSG_DONE:
                        done = True
                    elif msg_type == netlink.NLMSG_ERROR:
                        code = -NLMSGERR_CODE.unpack_from(data, body)[0]
                        if code:
                            raise NftablesError(code, f"list its {DUMPED[kind]}")
                        done = True
                    else:
                        found.append((data, body, end))
            if not interrupted:
                return found
        raise NetlinkError(errno.EINTR, "nf_tables kept changing while it was being listed")

    def tables(self, family: int) -> list[str]:
        names = []
        for data, body, end in self.dump(GETTABLE, family):
            attrs = _attributes(data, body + netlink.NFGENMSG.size, end)
            names.append(_text(attrs.get(TABLE_NAME, b"")))
        return names

    def chains(self, family: int, table: str) -> list[DumpedChain]:
        """The chains of a table (none when there is no such table)."""
        found = []
        for data, body, end in self.dump(GETCHAIN, family):
            owner, chain = parse_chain(data, body, end)
            if owner == table:
                found.append(chain)
        return found

    def rules(self, family: int, table: str) -> list[DumpedRule]:
        """The rules of a table in chain order (none when there is no such table)."""
        found = []
        for data, body, end in self.dump(GETRULE, family, attribute(RULE_TABLE, _string(table))):
            owner, rule = parse_rule(data, body, end)
            if owner == table:
                found.append(rule)
        return found
