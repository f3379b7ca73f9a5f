import random

from divertgui.engine.packet_hash import hash_packet
from tests import packet_gen


def test_unparsable_packet_hashes_to_zero():
    assert hash_packet(b"\x45\0") == 0


def test_seed_changes_the_hash():
    raw = bytes.fromhex("4500002800000000400666ce0a0000010a00000200010050deadbeef000000005002fffffdf10000")
    assert hash_packet(raw, 0) != hash_packet(raw, 1)


def test_equals_the_reference_for_every_generated_packet_and_seed(reference):
    rng = random.Random(3)
    for _ in range(3000):
        raw = packet_gen.packet(rng)
        seed = rng.choice((0, 1, rng.getrandbits(64), rng.getrandbits(32)))
        assert hash_packet(raw, seed) == reference.hash(raw, seed), (raw.hex(), seed)
