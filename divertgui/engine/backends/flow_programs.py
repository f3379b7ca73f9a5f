"""The FLOW layer's eBPF program: TCP connections established and deleted, with their process.

One sock_ops program, on the same cgroup and maps as the SOCKET layer's
programs (socket_programs.py):

    TCP_LISTEN_CB              (no event) the port's listener, for inbound flows
    ACTIVE_ESTABLISHED_CB      ESTABLISHED, outbound; the process that created the socket
    PASSIVE_ESTABLISHED_CB     ESTABLISHED, inbound; the listener is the parent endpoint
                               and its process the flow's
    STATE_CB to TCP_CLOSE      DELETED, with what ESTABLISHED recorded (flows map)

Both ESTABLISHED callbacks ask the kernel for state callbacks on that
socket (bpf_sock_ops_cb_flags_set), which is how the flow's end is seen.
A flow is never refused: FLOW handles sniff, as in WinDivert.
"""

from __future__ import annotations

from divertgui.engine.address import Event
from divertgui.engine.filter import Node

from . import bpf_syscall as sys_bpf
from . import ebpf
from .ebpf import B, DW, R0, R1, R2, R6, R10, W, Assembler
from .socket_programs import (KEY, MAP_DELETE, SOCK_OPS_LISTEN, SOCK_OPS_PASSIVE_ESTABLISHED, VALUE, Maps, Program,
                              begin_record, dispatch_sock_ops, field_at, finish, inherit_listener, listener_key,
                              lookup, owner_of, sock_ops_endpoints, update)

SOCK_OPS_ACTIVE_ESTABLISHED, SOCK_OPS_STATE = 4, 10
SOCK_OPS_NEW_STATE = 8                  # args[1] of STATE_CB
TCP_CLOSE = 7
STATE_CB_FLAG = 4                       # BPF_SOCK_OPS_STATE_CB_FLAG
SOCK_OPS_CB_FLAGS_SET = 59              # the bpf_sock_ops_cb_flags_set helper
FLOW_SIZE = 16                          # a flows map value: outbound (8 bytes), parent cookie (8 bytes)


def _established(code: Assembler, tree: Node, maps: Maps, outbound: bool) -> None:
    begin_record(code, Event.FLOW_ESTABLISHED, outbound)
    sock_ops_endpoints(code, remote=True)
    if outbound:
        owner_of(code, maps, "endpoint_id")
    else:
        inherit_listener(code, maps)
    # Remember the flow for its DELETED: its direction and parent.
    code.store_imm(DW, R10, VALUE, int(outbound))
    code.load(DW, R2, R10, field_at("parent_endpoint_id"))
    code.store(DW, R10, VALUE + 8, R2)
    code.load(DW, R2, R10, field_at("endpoint_id"))
    code.store(DW, R10, KEY, R2)
    update(code, maps.flows)
    code.mov(R1, R6)
    code.mov_imm(R2, STATE_CB_FLAG)
    code.call(SOCK_OPS_CB_FLAGS_SET)                                # the kernel will tell us when it closes
    finish(code, tree, maps, block=False)


def _deleted(code: Assembler, tree: Node, maps: Maps) -> None:
    ignore, flow = code.label(), code.label()
    code.load(W, R2, R6, SOCK_OPS_NEW_STATE)
    code.jump_imm(ebpf.JNE, R2, TCP_CLOSE, ignore)
    begin_record(code, Event.FLOW_DELETED, outbound=False)
    code.load(DW, R2, R10, field_at("endpoint_id"))
    code.store(DW, R10, KEY, R2)
    lookup(code, maps.flows, flow, ignore)                          # not a flow this handle saw begin
    code.place(flow)
    code.load(B, R2, R0, 0)
    code.store(B, R10, field_at("outbound"), R2)
    code.load(DW, R2, R0, 8)
    code.store(DW, R10, field_at("parent_endpoint_id"), R2)
    code.load_map(R1, maps.flows)
    code.mov(R2, R10)
    code.alu_imm(ebpf.ADD, R2, KEY)
    code.call(MAP_DELETE)
    sock_ops_endpoints(code, remote=True)
    owner_of(code, maps, "endpoint_id")
    finish(code, tree, maps, block=False)
    code.place(ignore)
    code.mov_imm(R0, 1)
    code.exit()


def flow_sock_ops(tree: Node, maps: Maps) -> Program:
    code = Assembler()
    code.mov(R6, R1)
    listen, active, passive, state = dispatch_sock_ops(code, SOCK_OPS_LISTEN, SOCK_OPS_ACTIVE_ESTABLISHED,
                                                       SOCK_OPS_PASSIVE_ESTABLISHED, SOCK_OPS_STATE)

    code.place(listen)                                              # this port's listener, for inbound flows
    code.mov(R1, R6)
    code.call(ebpf.GET_SOCKET_COOKIE)
    code.store(DW, R10, VALUE, R0)
    listener_key(code)
    update(code, maps.listeners)
    code.mov_imm(R0, 1)
    code.exit()

    code.place(active)
    _established(code, tree, maps, outbound=True)
    code.place(passive)
    _established(code, tree, maps, outbound=False)
    code.place(state)
    _deleted(code, tree, maps)
    return Program("divert_flows", sys_bpf.PROG_TYPE_SOCK_OPS, sys_bpf.ATTACH_SOCK_OPS, None, code.assemble())
