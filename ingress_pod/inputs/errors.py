"""What can go wrong with an input, as errors whose message is fit for the ingress status.

Kept apart from `av_input` so the modules it uses to open sources (SRT, URL options, codecs)
can raise them without importing the reader.
"""

from __future__ import annotations


class InputError(Exception):
    """An input the session cannot use; the message is what the ingress status shows."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class Unreachable(InputError):
    """The source could not be opened or its connection was lost."""


class Unsupported(InputError):
    """The input carries a codec this ingress cannot take, or needs a tool it lacks."""


class Corrupt(InputError):
    """The input is not readable media, or a stream of it does not decode."""


class NoMedia(InputError):
    """No audio or video arrived in time."""


class Stalled(InputError):
    """The input stopped sending data without ending."""


def no_media(timeout: float) -> NoMedia:
    """The error for an input that brought no stream within `timeout` seconds."""
    return NoMedia(f"no audio or video received within {timeout:g} s")


def stalled(timeout: float) -> Stalled:
    """The error for an open input that sent nothing for `timeout` seconds."""
    return Stalled(f"input stalled: no data for {timeout:g} s")
