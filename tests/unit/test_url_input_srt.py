"""URL input from SRT (caller mode, through srt-live-transmit): a live sender to its end, no
sender, a wrong passphrase, a sender that stops or dies, and the child process's lifetime. The
senders are Debian's ffmpeg listening on 127.0.0.1."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ingress_pod.inputs import srt
from ingress_pod.inputs.av_input import AvInput
from ingress_pod.inputs.errors import Stalled, Unreachable, Unsupported
from ingress_pod.inputs.srt import SrtSource, caller_uri
from tests.unit.test_url_input import AUDIO, FFMPEG, H264, VIDEO, drain, url_input

needs_tools = pytest.mark.skipif(
    FFMPEG is None or shutil.which(srt.TOOL) is None, reason="ffmpeg and srt-live-transmit are needed"
)
PASSPHRASE = "correct-horse-battery"


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class Sender:
    """ffmpeg listening for one SRT caller on 127.0.0.1 and sending it H.264 + AAC in MPEG-TS
    in real time."""

    def __init__(self, seconds: float, passphrase: str | None = None) -> None:
        self.port = free_udp_port()
        listener = f"srt://127.0.0.1:{self.port}?mode=listener"
        if passphrase:
            listener += f"&passphrase={passphrase}"
        self.process = subprocess.Popen(
            [
                FFMPEG or "ffmpeg", "-hide_banner", "-loglevel", "quiet", "-re", *VIDEO, *AUDIO,
                "-t", str(seconds), *H264, "-c:a", "aac", "-f", "mpegts", listener,
            ],
            stdin=subprocess.DEVNULL,
        )  # fmt: skip

    def url(self, query: str = "") -> str:
        return f"srt://127.0.0.1:{self.port}" + (f"?{query}" if query else "")

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(5)


@pytest.fixture
def sender() -> Iterator[list[Sender]]:
    """Makes senders; kills what is left of them after the test."""
    made: list[Sender] = []
    yield made
    for each in made:
        each.close()


def srt_children() -> list[int]:
    """Live srt-live-transmit processes whose parent is this process."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # gone meanwhile
            continue
        name, rest = text.split("(", 1)[1].rsplit(")", 1)
        state, parent = rest.split()[:2]
        if name.startswith("srt-live") and int(parent) == os.getpid() and state != "Z":
            found.append(int(stat.parent.name))
    return found


@needs_tools
async def test_a_live_sender_is_read_to_its_end(sender: list[Sender]) -> None:
    sender.append(source := Sender(seconds=1))
    result = await drain(url_input(source.url("latency=120"), realtime=True), limit=10)
    assert result.error is None
    assert result.info is not None and result.info.video is not None and result.info.audio is not None
    assert (result.info.video.codec, result.info.video.width, result.info.video.height) == ("h264", 160, 120)
    assert (result.info.audio.codec, result.info.audio.sample_rate) == ("aac", 48000)
    # 15 frames sent, but Debian's ffmpeg as SRT listener loses its last ~0.3 s when it closes
    # (ffmpeg's own SRT caller receives no more): 10 arrive.
    assert result.video >= 9 and result.audio > 0
    assert srt_children() == []


@needs_tools
async def test_nothing_listening_is_unreachable() -> None:
    port = free_udp_port()
    result = await drain(url_input(f"srt://127.0.0.1:{port}?conntimeo=1000&passphrase=not-in-messages"))
    assert isinstance(result.error, Unreachable)
    assert (
        result.error.message == f"source unreachable: SRT connection to 127.0.0.1:{port} failed (no answer)"
    )
    # The tool gave up after the URL's 1 s (its own default is 3 s, the open timeout 5 s).
    assert result.elapsed < 2.8


@needs_tools
@pytest.mark.parametrize(
    ("query", "reason"),
    [(f"passphrase={PASSPHRASE}-not", "Incorrect passphrase"), ("", "Password required or unexpected")],
)
async def test_a_refused_passphrase_is_named(sender: list[Sender], query: str, reason: str) -> None:
    sender.append(source := Sender(seconds=10, passphrase=PASSPHRASE))
    result = await drain(url_input(source.url(query)))
    assert isinstance(result.error, Unreachable)
    assert (
        result.error.message
        == f"source unreachable: SRT connection to 127.0.0.1:{source.port} failed ({reason})"
    )


@needs_tools
async def test_the_right_passphrase_and_a_streamid_pass_through(sender: list[Sender]) -> None:
    sender.append(source := Sender(seconds=1, passphrase=PASSPHRASE))
    result = await drain(url_input(source.url(f"streamid=#!::r=live/cam,m=request&passphrase={PASSPHRASE}")))
    assert result.error is None and result.video > 0


@needs_tools
async def test_a_sender_that_stops_ends_the_input(sender: list[Sender]) -> None:
    sender.append(source := Sender(seconds=10))
    options = url_input(source.url(), realtime=True, read_timeout=3)
    reading = asyncio.create_task(drain(options, limit=10))
    await asyncio.sleep(1.5)
    source.process.send_signal(signal.SIGINT)  # ffmpeg closes its SRT socket on the way out
    result = await reading
    assert result.error is None
    assert result.video > 10
    assert result.elapsed < 4.3  # at once, not at the read timeout (1.5 + 3 s)


@needs_tools
async def test_a_sender_that_dies_stalls_the_input(sender: list[Sender]) -> None:
    sender.append(source := Sender(seconds=10))
    # A read timeout over SRT's own 5 s peer idle timeout, as the default (10 s) is.
    options = url_input(source.url(), realtime=True, read_timeout=6)
    reading = asyncio.create_task(drain(options, limit=15))
    await asyncio.sleep(1.5)
    source.process.kill()  # no goodbye: SRT drops the sender only after its peer idle timeout
    result = await reading
    # A stall, not the end of a sender that finished.
    assert isinstance(result.error, Stalled)
    assert result.error.message == "input stalled: no data for 6 s"
    assert 7 < result.elapsed < 9.5


@needs_tools
async def test_stopping_the_input_kills_srt_live_transmit(sender: list[Sender]) -> None:
    sender.append(source := Sender(seconds=10))
    reader = AvInput(url_input(source.url(), realtime=True), asyncio.get_running_loop())
    reader.start()
    await asyncio.wait_for(reader.video.get(), 5)
    assert len(srt_children()) == 1
    reader.stop()
    assert await asyncio.wait_for(reader.ended, 2) is None  # stopped: an end, not an error
    assert srt_children() == []


def test_the_child_sets_its_death_signal_without_looking_up_a_symbol() -> None:
    # Between fork and exec the child may take no lock another thread held at the fork, such as
    # the dynamic loader's that a symbol lookup takes: prctl was resolved at import.
    code = (
        "import ctypes, signal\n"
        "from ingress_pod.inputs import srt\n"
        "ctypes.CDLL.__getattr__ = ctypes.CDLL.__getitem__ = None\n"  # any lookup now fails
        "srt._die_with_parent()\n"
        "got = ctypes.c_int()\n"
        "srt._prctl(2, ctypes.addressof(got), 0, 0, 0)\n"  # PR_GET_PDEATHSIG
        "assert got.value == signal.SIGKILL, got.value\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)


@needs_tools
def test_srt_live_transmit_dies_with_the_thread_that_started_it() -> None:
    # Calling for 10 s: only the kernel's parent-death signal ends it sooner.
    source = SrtSource(f"srt://127.0.0.1:{free_udp_port()}?conntimeo=10000", 5, 5)
    running: list[int] = []

    def start_and_leave() -> None:
        before = set(srt_children())
        source.start()
        # The kernel closes the exec error pipe (Popen returns) a moment before it renames the
        # child: it may still be "python" here.
        deadline = time.monotonic() + 1
        while not (started := set(srt_children()) - before) and time.monotonic() < deadline:
            time.sleep(0.01)
        running.extend(started)

    starter = threading.Thread(target=start_and_leave)
    starter.start()
    starter.join()
    try:
        assert len(running) == 1, running
        deadline = time.monotonic() + 2
        while running[0] in srt_children() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert running[0] not in srt_children()
    finally:
        source.close()


async def test_what_srt_live_transmit_cannot_call_is_unsupported(monkeypatch: pytest.MonkeyPatch) -> None:
    listener = await drain(url_input("srt://127.0.0.1:9000?mode=listener"))
    assert isinstance(listener.error, Unsupported)
    assert listener.error.message == "unsupported SRT mode listener: URL input calls the sender (mode=caller)"
    low_port = await drain(url_input("srt://127.0.0.1:900"))
    assert isinstance(low_port.error, Unsupported)
    assert low_port.error.message == "unsupported SRT URL: port 900 (SRT input takes 1024-65535)"
    monkeypatch.setattr(shutil, "which", lambda name: None)
    missing = await drain(url_input("srt://127.0.0.1:9000"))
    assert isinstance(missing.error, Unsupported)
    assert (
        missing.error.message == "unsupported input: SRT needs srt-live-transmit (Debian package srt-tools)"
    )


def test_the_callers_uri_keeps_the_users_options_verbatim() -> None:
    uri = "srt://relay.example:9000?streamid=#!::r=live/cam,m=request&latency=200&peeridletimeo=3000&mode=caller"
    assert caller_uri(uri, 10) == uri
    # Unless the user chose one, SRT keeps a silent sender past the read timeout (10 s + 2 s).
    assert (
        caller_uri("srt://relay.example:9000", 10)
        == "srt://relay.example:9000?peeridletimeo=12000&mode=caller"
    )
