"""An engine Address as WinDivert's WINDIVERT_ADDRESS structure and back."""

from __future__ import annotations

from divertgui.engine.address import Address, EndpointData, Event, Layer, ReflectData
from divertgui.pydivert.windivert_dll.structs import WinDivertAddress

NETWORK_LAYERS = (Layer.NETWORK, Layer.NETWORK_FORWARD)
ENDPOINT_LAYERS = (Layer.FLOW, Layer.SOCKET)
# Engine field -> WINDIVERT_DATA_FLOW/SOCKET field, and the same for WINDIVERT_DATA_REFLECT.
ENDPOINT_FIELDS = {"endpoint_id": "EndpointId", "parent_endpoint_id": "ParentEndpointId",
                   "process_id": "ProcessId", "local_port": "LocalPort", "remote_port": "RemotePort",
                   "protocol": "Protocol"}
ENDPOINT_ADDRESSES = {"local_addr": "LocalAddr", "remote_addr": "RemoteAddr"}
REFLECT_FIELDS = {"timestamp": "Timestamp", "process_id": "ProcessId", "layer": "Layer", "flags": "Flags",
                  "priority": "Priority"}


def event_value(number: int) -> Event | int:
    """An address's event as the engine's Event where it is one of WinDivert's."""
    return Event(number) if number in Event._value2member_map_ else number


def endpoint_struct(data: EndpointData, struct) -> None:
    """Fill a WINDIVERT_DATA_FLOW/SOCKET; its addresses are UINT32[4], the low word first."""
    for name, field in ENDPOINT_FIELDS.items():
        setattr(struct, field, getattr(data, name))
    for name, field in ENDPOINT_ADDRESSES.items():
        value = getattr(data, name)
        getattr(struct, field)[:] = [(value >> (32 * i)) & 0xFFFFFFFF for i in range(4)]


def endpoint_data(struct) -> EndpointData:
    data = EndpointData(**{name: getattr(struct, field) for name, field in ENDPOINT_FIELDS.items()})
    for name, field in ENDPOINT_ADDRESSES.items():
        setattr(data, name, sum(word << (32 * i) for i, word in enumerate(getattr(struct, field))))
    return data


def reflect_struct(data: ReflectData, struct) -> None:
    for name, field in REFLECT_FIELDS.items():
        setattr(struct, field, getattr(data, name))


def reflect_data(struct) -> ReflectData:
    data = ReflectData(**{name: getattr(struct, field) for name, field in REFLECT_FIELDS.items()})
    data.layer = Layer(data.layer) if data.layer in Layer._value2member_map_ else data.layer
    return data


def windivert_address(address: Address) -> WinDivertAddress:
    wd = WinDivertAddress()
    wd.Timestamp = address.timestamp
    wd.Layer, wd.Event = int(address.layer), int(address.event)
    wd.Sniffed, wd.Outbound = address.sniffed, address.outbound
    wd.Loopback, wd.Impostor, wd.IPv6 = address.loopback, address.impostor, address.ipv6
    wd.IPChecksum, wd.TCPChecksum, wd.UDPChecksum = address.ip_checksum, address.tcp_checksum, address.udp_checksum
    if address.layer in NETWORK_LAYERS:
        wd.Network.IfIdx, wd.Network.SubIfIdx = address.if_idx, address.sub_if_idx
    elif address.layer in ENDPOINT_LAYERS and address.flow is not None:
        # Flow and Socket are one union member in WinDivert's layout.
        endpoint_struct(address.flow, wd.Flow)
    elif address.layer == Layer.REFLECT and address.reflect is not None:
        reflect_struct(address.reflect, wd.Reflect)
    return wd


def engine_address(wd: WinDivertAddress) -> Address:
    layer = Layer(wd.Layer)
    network = layer in NETWORK_LAYERS
    return Address(
        outbound=bool(wd.Outbound), loopback=bool(wd.Loopback), impostor=bool(wd.Impostor),
        ipv6=bool(wd.IPv6), if_idx=wd.Network.IfIdx if network else 0,
        sub_if_idx=wd.Network.SubIfIdx if network else 0, timestamp=wd.Timestamp,
        sniffed=bool(wd.Sniffed), layer=layer,
        event=event_value(wd.Event),
        ip_checksum=bool(wd.IPChecksum), tcp_checksum=bool(wd.TCPChecksum),
        udp_checksum=bool(wd.UDPChecksum),
        flow=endpoint_data(wd.Flow) if layer in ENDPOINT_LAYERS else None,
        reflect=reflect_data(wd.Reflect) if layer == Layer.REFLECT else None)
