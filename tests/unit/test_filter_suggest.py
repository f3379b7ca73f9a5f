"""A bad filter word gets the valid name it probably meant; the reference's error is unchanged."""

import pytest

from divertgui.engine.address import Layer
from divertgui.engine.filter import FilterError, compile_filter
from divertgui.engine.filter.errors import BAD_TOKEN
from divertgui.engine.filter.suggest import edit_distance, suggest_name


def _error(text, layer=Layer.NETWORK):
    with pytest.raises(FilterError) as caught:
        compile_filter(text, layer)
    return caught.value


@pytest.mark.parametrize("text, position, meant", [
    ("TCP.dstport == 80", 0, "tcp.DstPort"),
    ("tcp.DstPrt == 80", 0, "tcp.DstPort"),
    ("tcp.DtsPort == 80", 0, "tcp.DstPort"),
    ("udp and ipv4", 8, "ip"),
    ("ipv4.TTL < 5", 0, "ip.TTL"),
    ("ip.src == 10.0.0.1", 0, "ip.SrcAddr"),
    ("tcp.flags.syn", 0, "tcp.Syn"),
    ("tcp AND udp", 4, "and"),
    ("Inbound", 0, "inbound"),
    ("ip.Protocol == Udp", 15, "UDP"),
    ("tcp.DstPort == 80 or udpp", 21, "udp"),
])
def test_a_near_miss_names_what_was_meant(text, position, meant):
    error = _error(text)
    assert (error.message, error.position, error.suggestion) == (BAD_TOKEN, position, meant)


def test_after_a_comparison_a_macro_is_preferred_to_a_field():
    assert _error("ip.Protocol == Tcp").suggestion == "TCP"
    assert _error("Tcp").suggestion == "tcp"


def test_only_names_valid_at_the_layer_are_offered():
    assert _error("Inbound").suggestion == "inbound"
    assert _error("Inbound", Layer.NETWORK_FORWARD).suggestion is None
    assert suggest_name("Outbound", Layer.NETWORK_FORWARD) is None


@pytest.mark.parametrize("text", ["frobnicate", "x", "tcp.Nothing == 1", "a" * 39])
def test_nothing_close_offers_nothing(text):
    assert _error(text).suggestion is None


def test_errors_other_than_a_bad_word_carry_no_suggestion():
    assert _error("tcp.DstPort == ").suggestion is None
    assert _error("outbound", Layer.NETWORK_FORWARD).suggestion is None


def test_the_suggestion_survives_pickling():
    import pickle
    error = pickle.loads(pickle.dumps(_error("TCP.dstport")))
    assert (error.message, error.position, error.suggestion) == (BAD_TOKEN, 0, "tcp.DstPort")


def test_edit_distance_counts_a_swap_as_one_edit():
    assert edit_distance("dtsport", "dstport", 3) == 1
    assert edit_distance("abc", "xyz", 2) == 2
    assert edit_distance("same", "same", 2) == 0
