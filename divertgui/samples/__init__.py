"""WinDivert's sample programs that are more than a loop over a handle, one module each."""

import argparse


class UsageError(ValueError):
    """The sample was given something it cannot use; the message says what and where."""


def port_number(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 1 <= value <= 0xFFFF:
        raise argparse.ArgumentTypeError(f"port {value} is outside 1..65535")
    return value
