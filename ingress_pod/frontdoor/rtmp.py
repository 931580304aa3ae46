"""The RTMP listener: pyrtmp does the handshake, chunking and AMF; this module decides, at
`publish`, whether the stream key may publish, and passes the media messages on as FLV tags.

A refusal is an `onStatus` error on the publish's stream (`NetStream.Publish.BadName`, with the
reason as description) followed by closing the connection: encoders report it and exit rather
than waiting on a silent socket.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Protocol

from bitstring import BitStream

from ingress_operator.models import InputType
from ingress_pod.frontdoor import flv
from ingress_pod.frontdoor.sessions import LiveSession, Refused

# Importing pyrtmp calls logging.basicConfig(DEBUG); keep its handler off the root logger.
_root_handlers = list(logging.getLogger().handlers)
from pyrtmp import StreamClosedException  # noqa: E402
from pyrtmp.amf.serializers import AMF0Serializer  # noqa: E402
from pyrtmp.messages import Chunk  # noqa: E402
from pyrtmp.messages.command import NCConnect, NCCreateStream, NSPublish  # noqa: E402
from pyrtmp.messages.factory import MessageFactory  # noqa: E402
from pyrtmp.messages.protocol_control import SetChunkSize, SetPeerBandwidth, WindowAcknowledgementSize  # noqa: E402
from pyrtmp.messages.user_control import StreamBegin  # noqa: E402
from pyrtmp.session_manager import SessionManager  # noqa: E402

logging.getLogger().handlers[:] = _root_handlers
for _name in ("pyrtmp", "pyrtmp.rtmp", "pyrtmp.messages.command", "pyrtmp.messages.data"):
    logging.getLogger(_name).setLevel(logging.WARNING)

log = logging.getLogger(__name__)

MSG_AUDIO, MSG_VIDEO, MSG_DATA_AMF0, MSG_COMMAND_AMF0 = 0x08, 0x09, 0x12, 0x14
OUR_CHUNK_SIZE = 4096
# A client that has not published within this time after connecting is dropped.
PUBLISH_TIMEOUT_S = 30.0
# Encoders use 4 KiB to 64 KiB; a larger chunk size only helps a client exhaust memory.
MAX_CHUNK_SIZE = 1 << 20


def on_status(stream_id: int, level: str, code: str, description: str) -> Chunk:
    """An AMF0 `onStatus` command message for the given message stream."""
    data = BitStream()
    for value in ("onStatus", 0, None, {"level": level, "code": code, "description": description}):
        AMF0Serializer.create_object(data, value)
    payload = data.bytes
    return Chunk(
        chunk_type=0,
        chunk_id=5,
        timestamp=0,
        msg_length=len(payload),
        msg_type_id=MSG_COMMAND_AMF0,
        msg_stream_id=stream_id,
        payload=payload,
    )


def stream_key_of(publishing_name: str) -> str:
    """The key in a publish name; OBS and ffmpeg may append `?query` parameters."""
    return publishing_name.split("?", 1)[0].strip()


class Sessions(Protocol):
    """Where publishes become sessions (sessions.SessionRegistry)."""

    async def open(self, stream_key: str, input_type: InputType) -> LiveSession: ...

    def close(self, session: LiveSession, reason: str) -> None: ...


class RTMPServer:
    """Accepts RTMP publishers and turns each accepted publish into a front-door session."""

    def __init__(self, registry: Sessions) -> None:
        self.registry = registry
        self.connections: dict[asyncio.Task[Any], asyncio.StreamWriter] = {}

    async def start(self, host: str, port: int) -> asyncio.Server:
        return await asyncio.start_server(self._serve, host, port)

    async def close_connections(self, within: float = 5.0) -> None:
        """Drop every encoder (their sessions end as the connections do). Closing the sockets
        rather than cancelling the tasks lets each session end the way a disconnect does."""
        for writer in self.connections.values():
            writer.close()
        if self.connections:
            await asyncio.wait(list(self.connections), timeout=within)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.connections[task] = writer
        conn = SessionManager(reader=reader, writer=writer)
        peer = conn.peername
        session: LiveSession | None = None
        watcher: asyncio.Task[None] | None = None
        reason = "encoder disconnected"
        # Until it publishes, a client holds no session: one that idles is dropped.
        idle = asyncio.get_running_loop().call_later(PUBLISH_TIMEOUT_S, writer.close)
        try:
            await conn.handshake()
            async for chunk in conn.read_chunks_from_stream():
                kind = chunk.msg_type_id
                if session is not None and kind in (MSG_AUDIO, MSG_VIDEO):
                    session.feed(kind, chunk.timestamp, chunk.payload)
                    continue
                if session is not None and kind == MSG_DATA_AMF0:
                    body = flv.metadata_body(chunk.payload)
                    if body is not None:
                        session.feed(flv.SCRIPT, chunk.timestamp, body)
                    continue
                message = MessageFactory.from_chunk(chunk)
                if isinstance(message, NCConnect):
                    await self._connect(conn, message)
                elif isinstance(message, NCCreateStream):
                    conn.write_chunk_to_stream(message.create_response())
                    await conn.drain()
                elif isinstance(message, SetChunkSize):
                    if not 1 <= message.chunk_size <= MAX_CHUNK_SIZE:
                        raise ValueError(f"chunk size {message.chunk_size}")
                    conn.reader_chunk_size = message.chunk_size
                elif isinstance(message, NSPublish) and session is None:
                    session = await self._open(conn, message, peer)
                    if session is None:
                        return
                    idle.cancel()
                    watcher = asyncio.create_task(_close_when_ended(session, writer))
                    await _started(conn, message.msg_stream_id, session)
        except StreamClosedException:
            pass
        except (TimeoutError, ConnectionError, asyncio.IncompleteReadError) as err:
            reason = f"connection lost: {err or type(err).__name__}"
        except Exception as err:  # a malformed chunk stream: pyrtmp raises whatever it hit
            reason = f"malformed RTMP stream: {type(err).__name__}"
            log.warning("dropping an RTMP connection", extra={"peer": peer, "error": reason})
        finally:
            idle.cancel()
            if session is not None:
                self.registry.close(session, session.end_reason or reason)
            if watcher is not None:
                watcher.cancel()
            writer.close()
            self.connections.pop(task, None)

    async def _connect(self, conn: SessionManager, message: NCConnect) -> None:
        conn.write_chunk_to_stream(WindowAcknowledgementSize(ack_window_size=5_000_000))
        conn.write_chunk_to_stream(SetPeerBandwidth(ack_window_size=5_000_000, limit_type=2))
        conn.write_chunk_to_stream(StreamBegin(stream_id=0))
        conn.write_chunk_to_stream(SetChunkSize(chunk_size=OUR_CHUNK_SIZE))
        conn.writer_chunk_size = OUR_CHUNK_SIZE
        conn.write_chunk_to_stream(message.create_response())
        await conn.drain()

    async def _open(self, conn: SessionManager, message: NSPublish, peer: str) -> LiveSession | None:
        """A session for this publish, or None once the refusal is written."""
        key = stream_key_of(str(message.publishing_name or ""))
        stream_id = message.msg_stream_id
        try:
            session = await self.registry.open(key, InputType.RTMP)
        except Refused as refusal:
            log.info("publish refused", extra={"peer": peer, "reason": str(refusal)})
            refuse = on_status(stream_id, "error", "NetStream.Publish.BadName", str(refusal))
            conn.write_chunk_to_stream(refuse)
            await conn.drain()
            return None
        except Exception as err:  # the API server failed us: say so, don't hang the encoder
            log.warning("publish failed", extra={"peer": peer, "error": str(err)})
            conn.write_chunk_to_stream(
                on_status(stream_id, "error", "NetStream.Publish.Failed", "ingress service unavailable")
            )
            await conn.drain()
            return None
        log.info("publishing", extra={**session.log_extra, "peer": peer})
        return session


async def _started(conn: SessionManager, stream_id: int, session: LiveSession) -> None:
    """Tell the encoder to go on (the session is already the caller's to close, should the
    connection fail while this is written)."""
    conn.write_chunk_to_stream(StreamBegin(stream_id=stream_id))
    conn.write_chunk_to_stream(
        on_status(stream_id, "status", "NetStream.Publish.Start", f"publishing {session.resource_id}")
    )
    await conn.drain()


async def _close_when_ended(session: LiveSession, writer: asyncio.StreamWriter) -> None:
    """When the session ends from the other side (pod, operator), drop the encoder."""
    await session.ended.wait()
    writer.close()
