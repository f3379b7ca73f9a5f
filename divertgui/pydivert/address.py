"""An engine Address as WinDivert's WINDIVERT_ADDRESS structure and back."""

from __future__ import annotations

from divertgui.engine.address import Address, Event, Layer
from divertgui.pydivert.windivert_dll.structs import WinDivertAddress

NETWORK_LAYERS = (Layer.NETWORK, Layer.NETWORK_FORWARD)


def windivert_address(address: Address) -> WinDivertAddress:
    wd = WinDivertAddress()
    wd.Timestamp = address.timestamp
    wd.Layer, wd.Event = int(address.layer), int(address.event)
    wd.Sniffed, wd.Outbound = address.sniffed, address.outbound
    wd.Loopback, wd.Impostor, wd.IPv6 = address.loopback, address.impostor, address.ipv6
    wd.IPChecksum, wd.TCPChecksum, wd.UDPChecksum = address.ip_checksum, address.tcp_checksum, address.udp_checksum
    if address.layer in NETWORK_LAYERS:
        wd.Network.IfIdx, wd.Network.SubIfIdx = address.if_idx, address.sub_if_idx
    return wd


def engine_address(wd: WinDivertAddress) -> Address:
    layer = Layer(wd.Layer)
    network = layer in NETWORK_LAYERS
    return Address(
        outbound=bool(wd.Outbound), loopback=bool(wd.Loopback), impostor=bool(wd.Impostor),
        ipv6=bool(wd.IPv6), if_idx=wd.Network.IfIdx if network else 0,
        sub_if_idx=wd.Network.SubIfIdx if network else 0, timestamp=wd.Timestamp,
        sniffed=bool(wd.Sniffed), layer=layer,
        event=Event(wd.Event) if wd.Event in Event._value2member_map_ else wd.Event,
        ip_checksum=bool(wd.IPChecksum), tcp_checksum=bool(wd.TCPChecksum),
        udp_checksum=bool(wd.UDPChecksum))
