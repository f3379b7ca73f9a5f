"""Traffic over time as arrays for the charts: per-second packets and bytes by
protocol, inbound vs outbound, by key (the top processes, the hosts), and the top
conversations.

Fed incrementally from the store's columns with numpy; nothing per point
lives as a Python object.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from divertgui.engine.conversations import protocol_name
from divertgui.engine.traffic_by_key import BY_HOST, BY_PROCESS, KeyColumn, TrafficByKey
from divertgui.models.row_text import ip_endpoints

PROTOCOLS = ("TCP", "UDP", "ICMP", "ICMPv6", "other")
_PROTOCOL_INDEX = np.full(256, PROTOCOLS.index("other"), dtype=np.int8)
_PROTOCOL_INDEX[6] = 0
_PROTOCOL_INDEX[17] = 1
_PROTOCOL_INDEX[1] = 2
_PROTOCOL_INDEX[58] = 3
# A quarter of a second per bin: each chart update (4 a second) shows new data.
BIN_NS = 250_000_000
BIN_SECONDS = BIN_NS / 1e9
# The status bar's rate is the mean over this many seconds of complete bins. A plain mean over a
# window, not an exponential average: it is the packets the charts show over those seconds, and it
# is summed afresh from a few bins at each update, with nothing kept per packet. Two seconds, not
# one: traffic comes in bursts (a flow's packets together) and rows reach the window in batches,
# so the newest complete bin can still lack rows on their way; over eight bins neither moves it much.
RATE_SECONDS = 2.0
RATE_BINS = round(RATE_SECONDS / BIN_SECONDS)
# What the traffic can be split by, each a column of the store.
SPLITS: dict[str, KeyColumn] = {"process": BY_PROCESS, "host": BY_HOST}
OTHER = "other"


class SplitWindow(NamedTuple):
    """Per-second traffic of the top keys (most bytes first), then of every other row."""

    x: np.ndarray
    labels: list[str]          # one per top key, then OTHER
    keys: np.ndarray
    packets: np.ndarray        # [len(labels), len(x)]
    bytes: np.ndarray


class TrafficStats:
    def __init__(self, store):
        self.store = store
        # True while capturing: the newest bin is still being filled. A stopped capture's
        # or a file's newest bin is complete.
        self.live = False
        self.clear()

    def clear(self) -> None:
        self.generation = self.store.generation
        self.processed = 0
        self.start_ns: int | None = None
        self.bins = 0
        capacity = 64
        self.packets = np.zeros((len(PROTOCOLS), capacity), dtype=np.int64)
        self.bytes = np.zeros((len(PROTOCOLS), capacity), dtype=np.int64)
        self.inbound = np.zeros(capacity, dtype=np.int64)
        self.outbound = np.zeros(capacity, dtype=np.int64)
        self.total_packets = 0
        self.total_bytes = 0
        # One entry per conversation id, sorted by id: bytes, packets and the first row seen.
        self._conversation_ids = np.zeros(0, np.int64)
        self._conversation_bytes = np.zeros(0, np.int64)
        self._conversation_packets = np.zeros(0, np.int64)
        self._conversation_rows = np.zeros(0, np.int64)
        self.by_key = {name: TrafficByKey(split.none) for name, split in SPLITS.items()}

    def _grow(self, bins: int) -> None:
        capacity = self.inbound.shape[0]
        if bins <= capacity:
            return
        while capacity < bins:
            capacity *= 2
        pad = capacity - self.inbound.shape[0]
        self.packets = np.pad(self.packets, ((0, 0), (0, pad)))
        self.bytes = np.pad(self.bytes, ((0, 0), (0, pad)))
        self.inbound = np.pad(self.inbound, (0, pad))
        self.outbound = np.pad(self.outbound, (0, pad))

    def update(self, count: int) -> None:
        """Takes in the stored rows up to `count`."""
        if count < self.processed or self.store.generation != self.generation:
            self.clear()
        if count == self.processed:
            return
        first, self.processed = self.processed, count
        stamps = np.asarray(self.store.column("timestamp", first, count), dtype=np.int64)
        lengths = np.asarray(self.store.column("length", first, count), dtype=np.int64)
        protocols = np.asarray(self.store.column("protocol", first, count), dtype=np.int64) & 0xFF
        outbound = np.asarray(self.store.column("outbound", first, count), dtype=bool)
        unknown = np.asarray(self.store.column("direction_unknown", first, count), dtype=bool)
        if not (len(stamps) == len(lengths) == len(protocols) == len(outbound) == len(unknown) == count - first):
            # The store was emptied meanwhile; start again from the next update.
            self.clear()
            return
        if self.start_ns is None:
            self.start_ns = int(stamps[0])
        bins = np.maximum((stamps - self.start_ns) // BIN_NS, 0)
        self.bins = max(self.bins, int(bins.max()) + 1)
        self._grow(self.bins)
        kinds = _PROTOCOL_INDEX[protocols]
        for kind in range(len(PROTOCOLS)):
            chosen = kinds == kind
            if chosen.any():
                self.packets[kind] += np.bincount(bins[chosen], minlength=self.packets.shape[1])
                self.bytes[kind] += np.bincount(bins[chosen], weights=lengths[chosen],
                                                minlength=self.bytes.shape[1]).astype(np.int64)
        self.outbound += np.bincount(bins[outbound], minlength=self.outbound.shape[0])
        # A packet whose file does not say its direction counts in neither.
        self.inbound += np.bincount(bins[~outbound & ~unknown], minlength=self.inbound.shape[0])
        self.total_packets += count - first
        self.total_bytes += int(lengths.sum())
        self._count_conversations(first, count, lengths)
        for name, split in SPLITS.items():
            values = [np.asarray(self.store.column(column, first, count)) for column in split.columns]
            if all(len(column) == len(bins) for column in values):
                self.by_key[name].add(bins, split.keys(self.store, *values), lengths)

    def advance_to(self, now_ns: int) -> None:
        """Moves the time axis on to `now_ns` (the packets' clock): seconds without traffic
        count as seconds of none, so that the charts and the rate fall to zero when it stops."""
        if self.start_ns is None:
            return
        bins = (now_ns - self.start_ns) // BIN_NS + 1
        if bins > self.bins:
            self._grow(bins)
            self.bins = bins

    def _count_conversations(self, first: int, count: int, lengths) -> None:
        ids = np.asarray(self.store.column("conversation", first, count), dtype=np.int64)
        if len(ids) != len(lengths):
            return
        keys, first_index, inverse = np.unique(ids, return_index=True, return_inverse=True)
        sizes = np.bincount(inverse, weights=lengths).astype(np.int64)
        packets = np.bincount(inverse)
        at = np.searchsorted(self._conversation_ids, keys)
        known = at < len(self._conversation_ids)
        known[known] = self._conversation_ids[at[known]] == keys[known]
        self._conversation_bytes[at[known]] += sizes[known]
        self._conversation_packets[at[known]] += packets[known]
        new = ~known
        if new.any():
            where = at[new]
            self._conversation_ids = np.insert(self._conversation_ids, where, keys[new])
            self._conversation_bytes = np.insert(self._conversation_bytes, where, sizes[new])
            self._conversation_packets = np.insert(self._conversation_packets, where, packets[new])
            self._conversation_rows = np.insert(self._conversation_rows, where, first + first_index[new])

    def _conversation_label(self, row: int) -> str:
        try:
            source, destination = ip_endpoints(self.store.raw(row))
        except IndexError:
            return "…"
        protocol = int(self.store.column("protocol", row, row + 1)[0])
        name = protocol_name(protocol)
        if name in ("TCP", "UDP"):
            source += f":{int(self.store.column('src_port', row, row + 1)[0])}"
            destination += f":{int(self.store.column('dst_port', row, row + 1)[0])}"
        return f"{name} {source} ⇄ {destination}"

    # what the charts draw ------------------------------------------------
    @property
    def seconds(self) -> float:
        return self.bins * BIN_SECONDS

    def window(self, seconds: float = 60) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(x in seconds, packets/s[protocol, t], bytes/s[protocol, t], inbound/s[t], outbound/s[t]) over
        the last `seconds` of complete bins (the current bin too while it is the only one)."""
        start, end = self._span(seconds)
        x = np.arange(start, end, dtype=np.float64) * BIN_SECONDS
        per_second = 1.0 / BIN_SECONDS
        return (x, self.packets[:, start:end] * per_second, self.bytes[:, start:end] * per_second,
                self.inbound[start:end] * per_second, self.outbound[start:end] * per_second)

    def _span(self, seconds: float) -> tuple[int, int]:
        # The bin still being filled would show as a false drop at the live edge.
        end = self.bins - 1 if self.live and self.bins >= 2 else self.bins
        return max(0, end - int(seconds / BIN_SECONDS)), end

    def split_window(self, name: str, seconds: float = 60, count: int = 5) -> SplitWindow:
        """Over the same bins as window(): the `count` keys of split `name` (a SPLITS entry) with
        the most bytes in them, and everything else as OTHER, per second."""
        start, end = self._span(seconds)
        series = self.by_key[name].top(start, end, count)
        split = SPLITS[name]
        labels = [split.label(self.store, int(key)) for key in series.keys] + [OTHER]
        per_second = 1.0 / BIN_SECONDS
        return SplitWindow(np.arange(start, end, dtype=np.float64) * BIN_SECONDS, labels, series.keys,
                           series.packets * per_second, series.bytes * per_second)

    def rates(self) -> tuple[float, float]:
        """Packets/s and bytes/s over the last RATE_SECONDS of complete bins (fewer while the
        capture is younger) while capturing; 0 once it stops and for a file's rows, whose packets
        are not arriving now, and before the first bin is complete."""
        end = self.bins - 1
        start = max(0, end - RATE_BINS)
        if not self.live or end <= start:
            return 0.0, 0.0
        seconds = (end - start) * BIN_SECONDS
        return (float(self.packets[:, start:end].sum()) / seconds,
                float(self.bytes[:, start:end].sum()) / seconds)

    def top_conversations(self, n: int = 8) -> list[tuple[str, int, int]]:
        """(label, bytes, packets), most bytes first."""
        sizes = self._conversation_bytes
        if not len(sizes):
            return []
        top = np.argpartition(sizes, -n)[-n:] if len(sizes) > n else np.arange(len(sizes))
        top = top[np.argsort(-sizes[top], kind="stable")]
        return [(self._conversation_label(int(self._conversation_rows[i])), int(sizes[i]),
                 int(self._conversation_packets[i])) for i in top.tolist()]
