"""SRT input in caller mode, through Debian's `srt-live-transmit` (srt-tools).

PyAV's bundled FFmpeg has no SRT protocol, so a `srt-live-transmit` child process calls the
sender and writes the MPEG-TS it receives to its stdout; `SrtSource` is the file-like object
PyAV reads that pipe through. The tool says little: it exits 0 whether it could not connect,
was refused or the sender finished, and reports a refusal only as a log line on stderr. So the
source tells the cases apart itself: an exit before any byte arrived is a failed connection
(with the tool's reason), an exit after data is the end of the stream, and no byte within a
timeout is a stall. `read` never raises into FFmpeg: it records the error in `error` and ends
the stream, and the reader raises that error once the demuxer stops.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import threading
import urllib.parse
from typing import IO

from ingress_pod.inputs.errors import InputError, Unreachable, Unsupported, no_media, stalled

TOOL = "srt-live-transmit"
# The tool refuses lower ports ("Port value invalid: 1 - must be >=1024").
MIN_PORT = 1024
# How long the tool may take to exit once its stdout closed, before its reason is read.
_EXIT_WAIT = 2.0
_REJECT = re.compile(r"REJECT reported from HS processing: (.*?)(?: - not processing further)?$")
# SRT's option (ms) for how long a silent peer is kept (5 s by default), and how much longer than
# the read timeout the caller keeps one (see `caller_uri`).
_PEER_IDLE_OPTION = "peeridletimeo"
_PEER_IDLE_PAST_READ_TIMEOUT = 2.0
_PR_SET_PDEATHSIG = 1
# Resolved here, not in the child: looking a symbol up takes the dynamic loader's lock, which
# another thread may have held when the process forked (the child would wait for it forever).
_prctl = ctypes.CDLL(None, use_errno=True).prctl
_prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
_prctl.restype = ctypes.c_int


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    # The kernel sends SIGKILL when the thread that started the child exits: the input thread,
    # which ends with its input, or every thread when the media pod's process is killed.
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


class SrtSource:
    """An SRT sender called by `srt-live-transmit`, read by PyAV as a byte stream (`read`).

    Started and read by one thread (the input's), which closes it when done; `stop` may come
    from any thread.
    """

    def __init__(self, url: str, open_timeout: float, read_timeout: float) -> None:
        self._url = url
        self._open_timeout = open_timeout
        self._read_timeout = read_timeout
        parts = urllib.parse.urlsplit(url)
        self.address = f"{parts.hostname or ''}:{_port(url) or ''}"
        self.received = 0
        self.error: InputError | None = None
        self._ended = False
        self._stopped = False
        self._process: subprocess.Popen[bytes] | None = None
        # The tool's last stderr lines (its reason for failing). stderr is drained all along, so
        # a long session's warnings never fill the pipe and block the tool.
        self._stderr: collections.deque[str] = collections.deque(maxlen=8)
        self._drain: threading.Thread | None = None

    def start(self) -> None:
        """Start calling the sender; Unsupported for a URL the tool cannot call or no tool."""
        uri = caller_uri(self._url, self._read_timeout)
        tool = shutil.which(TOOL)
        if tool is None:
            raise Unsupported(f"unsupported input: SRT needs {TOOL} (Debian package srt-tools)")
        # preexec_fn makes one call of a function resolved at import: nothing in it waits for a
        # lock another thread may have held when the process forked, so it is safe in this
        # threaded process.
        self._process = subprocess.Popen(
            # -a:no: one connection, ending with the sender's; -ll:warn keeps the handshake's
            # REJECT reason.
            [tool, "-a:no", "-ll:warn", uri, "file://con"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            preexec_fn=_die_with_parent,
        )
        if self._stopped:  # `stop` came while the tool was starting
            self._process.kill()
        stderr = self._process.stderr
        assert stderr is not None  # stderr=PIPE
        self._drain = threading.Thread(
            target=self._drain_stderr, args=(stderr,), name="srt-stderr", daemon=True
        )
        self._drain.start()

    def _drain_stderr(self, stderr: IO[bytes]) -> None:
        for raw in stderr:
            line = raw.decode(errors="replace").strip()
            # The banner quotes the whole URI, passphrase included: never kept.
            if line and not line.startswith("Media path:"):
                self._stderr.append(line)

    def read(self, size: int) -> bytes:
        """Up to `size` bytes for PyAV; b"" at the end of the stream or after an error."""
        process = self._process
        if self._ended or process is None or process.stdout is None:
            return b""
        fd = process.stdout.fileno()
        timeout = self._read_timeout if self.received else self._open_timeout
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            return self._end(stalled(timeout) if self.received else no_media(timeout))
        data = os.read(fd, size)
        if data:
            self.received += len(data)
            return data
        # The tool exited: after data the sender finished (or `stop`); before any, it never got in.
        return self._end(None if self.received or self._stopped else self._connection_failed())

    def _end(self, error: InputError | None) -> bytes:
        self._ended = True
        self.error = self.error or error
        return b""

    def _connection_failed(self) -> Unreachable:
        assert self._process is not None and self._drain is not None  # started: read got EOF
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._process.wait(_EXIT_WAIT)
        self._drain.join(_EXIT_WAIT)
        return Unreachable(f"source unreachable: SRT connection to {self.address} failed ({self.reason()})")

    def reason(self) -> str:
        """Why the tool gave up, from its stderr: a handshake refusal, an unresolvable host, its
        last error line, or whether the sender answered at all."""
        lines = list(self._stderr)
        for line in reversed(lines):
            if match := _REJECT.search(line):
                return match.group(1)
        host = urllib.parse.urlsplit(self._url).hostname
        if host and not _resolves(host):
            # The tool's own words for this are "srt_connect: Operation not supported: Bad parameters".
            return f"cannot resolve host {host}"
        for line in reversed(lines):
            if line.startswith("ERROR:"):
                return line.removeprefix("ERROR:").strip().removeprefix("error:").strip()
        if "SRT source connected" in lines:
            return "the sender sent no data"
        return "no answer"

    def stop(self) -> None:
        """Kill the tool (from any thread): a pending `read` sees the end of the stream."""
        self._stopped = True
        process = self._process
        if process is not None and process.poll() is None:
            process.kill()

    def close(self) -> None:
        """Stop the tool, reap it and close its pipes (by the reading thread, once done reading)."""
        self.stop()
        self._ended = True
        process = self._process
        if process is None:
            return
        process.wait()
        if self._drain is not None:
            self._drain.join(_EXIT_WAIT)
        for pipe in (process.stdout, process.stderr):
            if pipe is not None:
                pipe.close()


def caller_uri(url: str, read_timeout: float) -> str:
    """The URI `srt-live-transmit` calls for `url`: the user's options (streamid, passphrase,
    latency, …) kept as written, `mode=caller` set, and unless the user set one a peer idle
    timeout past `read_timeout`; Unsupported for what the tool cannot call."""
    # The tool splits its query at "&" and "=" and decodes nothing, so a streamid such as
    # "#!::r=live/cam,m=request" goes through verbatim (urllib would take "#" for a fragment).
    base, _, query = url.partition("?")
    port = _port(base)
    if port is None or port < MIN_PORT:
        raise Unsupported(f"unsupported SRT URL: port {port or 'missing'} (SRT input takes 1024-65535)")
    params = [param for param in query.split("&") if param]
    modes = [value for key, _, value in (param.partition("=") for param in params) if key == "mode"]
    for mode in modes:
        if mode != "caller":
            raise Unsupported(f"unsupported SRT mode {mode}: URL input calls the sender (mode=caller)")
    kept = [param for param in params if param.partition("=")[0] != "mode"]
    if not any(param.partition("=")[0] == _PEER_IDLE_OPTION for param in params):
        # SRT drops a sender that died (killed, network cut) after its peer idle timeout, and the
        # tool then exits 0 as for a sender that closed: the input would end COMPLETE. `read`
        # must see the silence as a stall first.
        peer_idle = round((read_timeout + _PEER_IDLE_PAST_READ_TIMEOUT) * 1000)
        kept.append(f"{_PEER_IDLE_OPTION}={peer_idle}")
    return f"{base}?{'&'.join([*kept, 'mode=caller'])}"


def _port(url: str) -> int | None:
    try:
        return urllib.parse.urlsplit(url).port
    except ValueError:  # not a number, or out of range
        return None


def _resolves(host: str) -> bool:
    try:
        socket.getaddrinfo(host, None)
    except (socket.gaierror, UnicodeError):
        return False
    return True
