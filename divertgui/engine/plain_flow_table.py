"""Known flows of plain IPv4 packets (no options, not a fragment), looked up a whole batch at once.

Per packet, a dict lookup on its header bytes costs more than the rest of
storing it does in numpy; here a batch costs a fixed dozen or so array
operations instead. Each packet's first 24 bytes are read as three 64-bit
words, masked to the bytes that decide its flow: the first byte (version and
header length), the fragment bits, the protocol, the addresses and the
ports, with the direction in a bit the mask clears. The words are hashed,
the hash is found by binary search among the known flows' hashes, and a
packet counts as found only if all three of its words equal the flow's: a
packet of another shape, or a hash that two flows share, is not found and is
left to the caller. A packet shorter than 24 bytes reads as if padded with
zeros: it is found only where a flow's own packets have those bytes zero.
"""

from __future__ import annotations

import numpy as np

from divertgui.engine.header_fields import IPV4, IPV4_FRAGMENT_BITS, IPV4_HEADER_LEN, TCP

# The bytes of a plain IPv4 TCP or UDP packet that decide its flow, as a mask over its first 24.
_KEY_BYTES = IPV4_HEADER_LEN + TCP["dst_port"].offset + TCP["dst_port"].size
_KEY_TYPE = f"S{_KEY_BYTES}"


def _key_mask() -> np.ndarray:
    mask = bytearray(_KEY_BYTES)
    mask[0] = 0xFF
    at = IPV4["frag_offset"].offset
    mask[at:at + 2] = IPV4_FRAGMENT_BITS.to_bytes(2, "big")
    mask[IPV4["protocol"].offset] = 0xFF
    mask[IPV4["src_addr"].offset:_KEY_BYTES] = b"\xff" * (_KEY_BYTES - IPV4["src_addr"].offset)
    return np.frombuffer(bytes(mask), "<u8")


_MASK = _key_mask()
# The direction goes in the first word's second byte (the type of service), which the mask clears.
OUTBOUND_BIT = np.uint64(1 << 8)
assert not int(_MASK[0]) & int(OUTBOUND_BIT)
# The first word of a plain IPv4 packet: its first byte, no fragment bits.
PLAIN_V4_WORD = 4 << IPV4["version"].shift | IPV4_HEADER_LEN // 4
_MIX = np.uint64(0x9E3779B97F4A7C15)
NOT_FOUND = -1


def _flags(values) -> np.ndarray:
    """Booleans as 0 and 1; a list of them through bytes(), several times faster than numpy's conversion."""
    if isinstance(values, np.ndarray):
        return values.astype(np.uint8)
    return np.frombuffer(bytes(values), np.uint8)


def key_words(raws, outbound) -> np.ndarray:
    """Each packet's three key words, one row a packet."""
    try:
        heads = np.array(raws, _KEY_TYPE)
    except ValueError:
        heads = None
    if heads is None or heads.ndim != 1:
        # numpy reads bytes-like objects other than bytes as sequences of numbers.
        heads = np.array([bytes(raw[:_KEY_BYTES]) for raw in raws], _KEY_TYPE)
    words = heads.view("<u8").reshape(-1, 3) & _MASK
    words[:, 0] |= _flags(outbound) * OUTBOUND_BIT
    return words


def _hash(words: np.ndarray) -> np.ndarray:
    """A search key that tells flows apart almost always; a search only needs keys distinct, not
    spread, and a packet whose flow shares its key with another is only not found."""
    return words[:, 1] * _MIX ^ words[:, 2] ^ words[:, 0]


class PlainFlowTable:
    """Process indexes of plain IPv4 flows by their key words (key_words).

    The arrays are sorted by search key; flows added since the last search are merged in
    at the next one, by insertion (a copy of each array in C), so that a batch's few
    new flows cost no sort of all the others."""

    def __init__(self) -> None:
        self._entries: dict[tuple[int, int, int], int] = {}
        self._added: list[tuple[int, int, int]] = []
        self._arrays: tuple[np.ndarray, ...] | None = None

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        self._entries = {}
        self._added = []
        self._arrays = None

    def add(self, first: int, second: int, third: int, index: int) -> None:
        """A flow by its packets' key words; `first` must be PLAIN_V4_WORD (with the direction bit)."""
        key = (first, second, third)
        known = self._entries.get(key)
        self._entries[key] = index
        if known is None:
            self._added.append(key)
        elif known != index:
            self._arrays = None                 # another index for a flow: built again

    def find(self, words: np.ndarray) -> np.ndarray:
        """The process index of each packet's flow; NOT_FOUND where it is not known."""
        if self._arrays is None:
            self._build()
        elif self._added:
            self._merge()
        hashes, first, second, third, indexes = self._arrays
        at = np.searchsorted(hashes, _hash(words))
        # Column by column: numpy compares whole rows several times slower.
        same = (first[at] == words[:, 0]) & (second[at] == words[:, 1]) & (third[at] == words[:, 2])
        return np.where(same, indexes[at], NOT_FOUND)

    def _sorted(self, keys: list) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(search keys, key words, indexes) of these flows, by search key."""
        words = np.array(keys, np.uint64).reshape(-1, 3)
        indexes = np.fromiter((self._entries[key] for key in keys), np.int64, len(keys))
        hashes = _hash(words)
        order = np.argsort(hashes, kind="stable")
        return hashes[order], words[order], indexes[order]

    def _build(self) -> None:
        hashes, words, indexes = self._sorted(list(self._entries))
        self._added = []
        # One entry more, after the rest: where a search key larger than all lands, matching no packet.
        self._arrays = (np.append(hashes, np.iinfo(np.uint64).max),
                        *(np.append(words[:, i], 0) for i in range(3)), np.append(indexes, NOT_FOUND))

    def _merge(self) -> None:
        hashes, words, indexes = self._sorted(self._added)
        self._added = []
        old = self._arrays
        at = np.searchsorted(old[0][:-1], hashes)
        self._arrays = (np.insert(old[0], at, hashes), *(np.insert(old[1 + i], at, words[:, i]) for i in range(3)),
                        np.insert(old[4], at, indexes))
