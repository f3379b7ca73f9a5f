"""A process that moves packets runs the cyclic collector only once many objects have piled up."""

import gc

import pytest

from divertgui.engine.collector_settings import PACKET_FLOW_THRESHOLD, set_for_packet_flow


@pytest.fixture
def thresholds():
    saved = gc.get_threshold()
    yield
    gc.set_threshold(*saved)


def test_the_first_threshold_is_raised_and_the_others_kept(thresholds):
    gc.set_threshold(700, 10, 10)
    set_for_packet_flow()
    assert gc.get_threshold() == (PACKET_FLOW_THRESHOLD, 10, 10)


def test_a_higher_threshold_or_a_disabled_collector_is_left_alone(thresholds):
    for setting in ((PACKET_FLOW_THRESHOLD * 2, 10, 10), (0, 10, 10)):
        gc.set_threshold(*setting)
        set_for_packet_flow()
        assert gc.get_threshold() == setting


def test_a_batch_of_packets_alive_at_once_starts_no_collection(thresholds):
    # What 255 received packets hold until their verdicts, a few times over.
    set_for_packet_flow()
    gc.collect()
    runs = []
    gc.callbacks.append(lambda phase, info: runs.append(phase))
    try:
        for _ in range(20):
            batch = [({"id": i}, [i], (i, [i])) for i in range(2000)]
            del batch
    finally:
        gc.callbacks.pop()
    assert runs == []
