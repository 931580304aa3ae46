"""SDP as text, cut into sections: the few edits WHIP needs (RFC 8866) without a full parser.

Shared by the front door (which adds its relay candidate to answers) and the media pod (which
shapes aiortc's answer), so it imports nothing beyond the standard library.
"""

from __future__ import annotations


def sections(sdp: str) -> list[list[str]]:
    """The session-level lines, then the lines of each media section (from its `m=` line)."""
    out: list[list[str]] = [[]]
    for line in sdp.replace("\r\n", "\n").rstrip("\n").split("\n"):
        if line.startswith("m="):
            out.append([])
        out[-1].append(line)
    return out


def join(parts: list[list[str]]) -> str:
    """The SDP text of `parts` (as `sections` cut it), CRLF-terminated."""
    return "\r\n".join(line for part in parts for line in part) + "\r\n"


def attribute(lines: list[str], name: str) -> str | None:
    """The value of the first `a=<name>:` line, or None."""
    prefix = f"a={name}:"
    return next((line[len(prefix) :].strip() for line in lines if line.startswith(prefix)), None)


def media(parts: list[list[str]], kind: str) -> list[str] | None:
    """The first media section of `kind` ("audio", "video"), or None."""
    return next((part for part in parts[1:] if part[0].startswith(f"m={kind} ")), None)
