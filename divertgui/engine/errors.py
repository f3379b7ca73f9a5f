"""Every exception the engine raises, in one module that imports no other
engine module when it runs, so that any engine module can raise any of them
without an import cycle."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from divertgui.engine.address import Layer


# A handle's errors: what the Divert API raises ------------------------------------

class DivertError(Exception):
    """A handle could not do what was asked; the message says what and why."""


class DivertArgumentError(DivertError, ValueError):
    """An invalid flag combination, priority, layer or parameter."""


class NotPrivilegedError(DivertError, PermissionError):
    """The process lacks the privilege to divert packets."""


class MissingToolError(DivertError):
    """A program or library a backend needs (pydivert) is not installed."""


class KernelFeatureError(DivertError):
    """The kernel lacks a feature the driver needs (NFQUEUE, NFLOG)."""


class UnsupportedPlatformError(DivertError):
    """No backend for this operating system."""


class HandleClosedError(DivertError):
    """The handle is closed, or shut down in the direction asked."""


class HostUnreachableError(DivertError):
    """An impostor packet's TTL or hop limit reached zero (WinDivert's ERROR_HOST_UNREACHABLE)."""


class PacketTooLargeError(DivertError, ValueError):
    """A packet is larger than its IP header or the backend can carry: that one packet is not sent.

    Nothing of the send call that raised it was sent, and a received packet
    among them keeps its pending verdict (as a failed WinDivertSend leaves
    the packet un-injected): send its original bytes, or drop it.
    """

    def __init__(self, size: int, limit: int, why: str):
        super().__init__(f"a packet of {size} bytes cannot be sent: {why} carries at most {limit} bytes; "
                         f"the packet was not sent")
        self.size, self.limit = size, limit


class PacketCutError(DivertError, ValueError):
    """A received packet was handed over cut (the kernel copies at most what one netlink
    attribute carries), so its verdict may release or drop it but not carry new bytes:
    nothing of the send call was sent, and the packet keeps its pending verdict."""

    def __init__(self, ticket: int, received: int, size: int):
        super().__init__(f"packet {ticket} was received cut to {received} of its {size} bytes; "
                         f"it can be released unmodified or dropped, not edited")
        self.received, self.size = received, size


# Bad input ----------------------------------------------------------------------------

class FilterError(ValueError):
    """A filter that does not compile; `position` is a 0-based character index.

    `message` and `position` are the reference's own. `suggestion` is a name
    valid at the filter's layer that the bad word probably meant (a field,
    macro or keyword in the wrong case, or a near miss), or None.
    """

    def __init__(self, message: str, position: int, suggestion: str | None = None):
        super().__init__(message, position, suggestion)
        self.message = message
        self.position = position
        self.suggestion = suggestion

    def __str__(self) -> str:
        return f"{self.message} (at position {self.position})"


class RuleError(ValueError):
    """A rule that cannot be built: `where` names the rule and parameter at fault.

    `position` is the character of the filter where it went wrong, when the filter is at fault.
    """

    def __init__(self, message: str, where: str = "", position: int | None = None):
        super().__init__(f"{where}: {message}" if where else message)
        self.message = message
        self.where = where
        self.position = position


class CaptureFileError(ValueError):
    """A capture file is corrupt, truncated or of a kind this module cannot read.

    `offset` is the byte offset of the fault in the file; `records` holds the
    packets read before it (filled by read_capture; an iterator yields them
    before raising, and counts them in `count`).
    """

    def __init__(self, message: str, offset: int, path: str | None = None, count: int = 0):
        self.message = message
        self.offset = offset
        self.path = path
        self.count = count
        self.records: list = []
        where = f"{path}: " if path else ""
        super().__init__(f"{where}{message} (at byte offset {offset}, after {count} packets)")


class StreamError(ValueError):
    """The packet asked for has no TCP or UDP stream to follow."""


class EventCaptureError(Exception):
    """An event capture cannot start; `layer` names the layer at fault, `position` a filter error's place."""

    def __init__(self, message: str, layer: Layer | None = None, position: int | None = None):
        super().__init__(message)
        self.layer = layer
        self.position = position


class EventRecordError(ValueError):
    """An event record that is not one; the message says which field and why."""


class SessionError(Exception):
    """A command that cannot be carried out; `where` names what was wrong."""

    def __init__(self, message: str, where: str, position: int | None = None):
        super().__init__(message)
        self.where = where
        self.position = position


# What the backends raise ---------------------------------------------------------------

class BackendError(Exception):
    """A backend's failure; `kind` names what the machine lacks for it ("platform",
    "privilege", "tool" or "kernel"), None when it is a failure of another sort.
    A handle turns each kind into its own DivertError."""

    kind: str | None = None


class PrerequisiteError(BackendError, RuntimeError):
    """Something the netfilter backend needs from the machine is missing."""

    def __init__(self, message: str, kind: str):
        super().__init__(message)
        self.kind = kind


class EventLayerError(BackendError, OSError):
    """An event layer's backend cannot do what the handle asks; `kind` says what is missing."""

    def __init__(self, message: str, kind: str | None = None):
        super().__init__(message)
        self.kind = kind


class SocketLayerError(EventLayerError):
    """The kernel cannot do what a SOCKET or FLOW handle asks."""


class ReflectLayerError(EventLayerError):
    """The handle registry cannot do what a REFLECT handle asks."""


class RegistryError(BackendError, OSError):
    """The machine's handle registry cannot be used."""

    kind = "privilege"


class CgroupError(BackendError, OSError):
    """No cgroup v2 hierarchy to attach eBPF programs to."""

    kind = "kernel"

    def __str__(self) -> str:
        # The message says what and where; OSError's "[Errno N]" prefix adds nothing to it.
        return self.strerror or super().__str__()


class NetfilterError(RuntimeError):
    """nf_tables refused a change or could not be read; `missing_feature` names what of the
    kernel is missing, when that is why."""

    def __init__(self, message: str, missing_feature: str = ""):
        super().__init__(message)
        self.missing_feature = missing_feature


class NetlinkError(OSError):
    """The kernel answered a netfilter request with an error."""


class BpfError(OSError):
    """A bpf() command failed; `log` holds the verifier's output for a refused program."""

    def __init__(self, errno_: int, message: str, log: str = ""):
        super().__init__(errno_, message)
        self.log = log


class InjectError(OSError):
    """A packet could not be injected."""


class PrivilegeError(OSError):
    """The capability sets could not be read or changed."""


class WorkerPoolError(RuntimeError):
    """A capture worker process failed or did not report."""
