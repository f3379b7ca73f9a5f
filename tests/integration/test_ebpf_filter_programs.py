"""Every SOCKET- and FLOW-layer field, with every comparison, compiles into eBPF programs the kernel's
verifier accepts; random filters of them too (the events they select are tested in test_socket_layer)."""

from __future__ import annotations

import os
import random

import pytest

from divertgui.engine.address import Event, Layer
from divertgui.engine.backends import bpf_syscall, socket_programs
from divertgui.engine.backends.flow_programs import FLOW_SIZE, flow_sock_ops
from divertgui.engine.filter import FIELDS, FilterError, compile_filter
from tests import packet_gen

from .conftest import require_prerequisites


@pytest.fixture
def maps():
    require_prerequisites()
    fds = [bpf_syscall.create_ringbuf(1 << 16, "divert_test"),
           bpf_syscall.create_lru_hash(64, socket_programs.OWNER_SIZE, "t_owners"),
           bpf_syscall.create_lru_hash(64, 8, "t_listen"),
           bpf_syscall.create_lru_hash(64, socket_programs.LOCAL_SIZE, "t_locals"),
           bpf_syscall.create_lru_hash(64, FLOW_SIZE, "t_flows")]
    yield socket_programs.Maps(*fds)
    for fd in fds:
        os.close(fd)


def _programs(text: str, layer: Layer, maps):
    tree = compile_filter(text, layer).tree
    if layer == Layer.FLOW:
        return [flow_sock_ops(tree, maps)]
    return [socket_programs.sock_addr(tree, maps, Event.SOCKET_CONNECT, ipv6=True, block=True),
            socket_programs.sock_ops(tree, maps), socket_programs.sock_release(tree, maps)]


def _load_all(text: str, layer: Layer, maps) -> None:
    for program in _programs(text, layer, maps):
        try:
            fd = bpf_syscall.load_program(program.prog_type, program.attach_type, program.code, program.name)
        except bpf_syscall.BpfError as exc:
            raise AssertionError(f"{text!r}: {program.name} refused: {exc.log[-600:]}") from None
        os.close(fd)


@pytest.mark.parametrize("layer", [Layer.SOCKET, Layer.FLOW], ids=lambda layer: layer.name)
def test_every_field_and_comparison_loads(maps, layer):
    values = {"localAddr": "::ffff:10.0.0.1", "remoteAddr": "fe80::1", "timestamp": "-5",
              "endpointId": "0x123456789", "parentEndpointId": "0xFFFFFFFFFF"}
    for name, spec in FIELDS.items():
        if layer not in spec.layers or name in ("true", "false", "zero"):
            continue
        text = " or ".join(f"{name} {op} {values.get(name, '1')}" for op in ("==", "!=", "<", "<=", ">", ">="))
        _load_all(text, layer, maps)


@pytest.mark.parametrize("layer", [Layer.SOCKET, Layer.FLOW], ids=lambda layer: layer.name)
def test_generated_filters_load(maps, layer):
    rng = random.Random(f"load{layer.name}")
    loaded = 0
    while loaded < 15:
        text = packet_gen.event_filter_text(rng, layer)
        try:
            compile_filter(text, layer)
        except FilterError:
            continue
        _load_all(text, layer, maps)
        loaded += 1
