"""The session's IngressState in its CR's status.

While its session is current the media pod owns `status.state`. Every write is a JSON patch
that first tests `status.session.resourceId`: once another session has taken the ingress
over (or the session was ended), the test fails and nothing is written.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

from ingress_operator.models import IngressState, IngressStatus, InputAudioState, InputVideoState, TrackInfo
from ingress_pod import metrics
from ingress_pod.inputs.base import InputInfo

log = logging.getLogger(__name__)

# Input stats are rewritten only on a change worth a status write: measured rates wobble.
BITRATE_CHANGE = 0.10  # relative
FRAMERATE_CHANGE = 0.5  # frames per second


class StatusWriter(Protocol):
    """What state reporting needs of the Kubernetes client (ingress_operator.kube.Kube)."""

    async def json_patch_status(self, name: str, ops: list[dict[str, Any]]) -> dict[str, Any] | None: ...


def patch_ops(resource_id: str, state: IngressState) -> list[dict[str, Any]]:
    """The JSON patch that writes `state` only while `resource_id` is the CR's session."""
    return [
        {"op": "test", "path": "/status/session/resourceId", "value": resource_id},
        {"op": "add", "path": "/status/state", "value": state.to_cr()},
    ]


def input_states(
    info: InputInfo, video_rates: tuple[int, float], audio_rates: tuple[int, float]
) -> tuple[InputVideoState | None, InputAudioState | None]:
    """The input's streams as LiveKit reports them, with measured (bitrate, packet rate) pairs;
    the nominal frame rate stands in until one is measured."""
    video = audio = None
    if info.video:
        bitrate, framerate = video_rates
        video = InputVideoState(
            mime_type=info.video.mime_type,
            average_bitrate=bitrate,
            width=info.video.width,
            height=info.video.height,
            framerate=round(framerate or info.video.framerate, 2),
        )
    if info.audio:
        audio = InputAudioState(
            mime_type=info.audio.mime_type,
            average_bitrate=audio_rates[0],
            channels=info.audio.channels,
            sample_rate=info.audio.sample_rate,
        )
    return video, audio


def _bitrate_changed(old: int, new: int) -> bool:
    return abs(new - old) > BITRATE_CHANGE * max(old, 1)


def inputs_changed(
    old: tuple[InputVideoState | None, InputAudioState | None],
    new: tuple[InputVideoState | None, InputAudioState | None],
) -> bool:
    """Whether the input stats moved enough to be written again."""
    (old_v, old_a), (new_v, new_a) = old, new
    if (old_v is None) != (new_v is None) or (old_a is None) != (new_a is None):
        return True
    if old_v and new_v:
        if old_v.model_dump(exclude={"average_bitrate", "framerate"}) != new_v.model_dump(
            exclude={"average_bitrate", "framerate"}
        ):
            return True
        if abs(new_v.framerate - old_v.framerate) >= FRAMERATE_CHANGE:
            return True
        if _bitrate_changed(old_v.average_bitrate, new_v.average_bitrate):
            return True
    if old_a and new_a:
        if old_a.model_dump(exclude={"average_bitrate"}) != new_a.model_dump(exclude={"average_bitrate"}):
            return True
        if _bitrate_changed(old_a.average_bitrate, new_a.average_bitrate):
            return True
    return False


def _now() -> datetime:
    return datetime.now(UTC)


class StateReporter:
    """Writes the session's state into its CR. Each method returns False when the session is
    no longer current (nothing was written; the session should end quietly)."""

    def __init__(
        self,
        writer: StatusWriter,
        name: str,
        resource_id: str,
        previous: IngressState | None,
        clock: Callable[[], datetime] = _now,
    ) -> None:
        self._writer = writer
        self._name = name
        self._resource_id = resource_id
        self._clock = clock
        # The front door wrote BUFFERING with the session's start: keep that startedAt.
        started = previous.started_at if previous and previous.resource_id == resource_id else None
        self.state = IngressState(
            status=IngressStatus.ENDPOINT_BUFFERING, started_at=started or clock(), resource_id=resource_id
        )
        self._lock = asyncio.Lock()
        self._unwritten = False  # a write failed: the next chance writes the state again

    async def _write(self, **changes: Any) -> bool:
        async with self._lock:
            state = self.state.model_copy(update={**changes, "updated_at": self._clock()})
            try:
                written = await self._writer.json_patch_status(
                    self._name, patch_ops(self._resource_id, state)
                )
            except Exception as err:  # the API server is out of reach: the next write carries it
                log.warning("could not write the ingress state", extra={"error": str(err)})
                self.state, self._unwritten = state, True
                return True
            if written is None:
                log.info("session taken over: state not written")
                return False
            self.state, self._unwritten = state, False
            metrics.set_state(state.status)
            return True

    async def buffering(self, video: InputVideoState | None, audio: InputAudioState | None) -> bool:
        """The input is open: BUFFERING with its streams."""
        return await self._write(status=IngressStatus.ENDPOINT_BUFFERING, video=video, audio=audio)

    async def publishing(self, room_id: str, tracks: list[TrackInfo]) -> bool:
        """Tracks are live in the room."""
        return await self._write(status=IngressStatus.ENDPOINT_PUBLISHING, room_id=room_id, tracks=tracks)

    async def inputs(self, video: InputVideoState | None, audio: InputAudioState | None) -> bool:
        """New input stats, written if they changed enough (or an earlier write failed)."""
        if not self._unwritten and not inputs_changed((self.state.video, self.state.audio), (video, audio)):
            return True
        return await self._write(video=video, audio=audio)

    async def ended(self, status: IngressStatus, error: str | None = None) -> bool:
        """The session is over: `status` with endedAt; nothing is published any more."""
        return await self._write(status=status, error=error, ended_at=self._clock(), tracks=[])
