"""One live session: read the input, publish it into the room, keep the CR's state current.

Policy lives here (what ends a session and with which state, what is dropped when the machine
falls behind); reading the input is `inputs.av_input`'s, talking to LiveKit is `publish`'s.
The session ends on the first of: end of input, an input error, losing the room, a stop
request (SIGTERM), or another session taking the ingress over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

import httpx2
from av.video.frame import VideoFrame
from lightkube import ApiError
from pydantic import ValidationError

from ingress_operator import presets
from ingress_operator.models import IngressSpec, IngressStatus, InputType, LiveKitIngress, TrackInfo
from ingress_pod import metrics
from ingress_pod.config import MediaSettings
from ingress_pod.inputs import codecs
from ingress_pod.inputs.av_input import AvInput, InputOptions
from ingress_pod.inputs.base import MediaInput
from ingress_pod.inputs.encoded import EncodedUnit
from ingress_pod.inputs.errors import InputError
from ingress_pod.inputs.stats import FrameRateLimiter
from ingress_pod.inputs.whip import WhipInput, WhipOptions
from ingress_pod.publish import (
    AudioOutput,
    JoinError,
    Participant,
    Publisher,
    PublishError,
    audio_frame,
    ingress_token,
)
from ingress_pod.state import StateReporter, StatusWriter, input_states

log = logging.getLogger(__name__)

# Audio is dropped rather than queued when LiveKit's source already holds this much: it caps
# the audio latency (and collapses the GOP burst the front door sends at the start).
MAX_AUDIO_QUEUED = 0.2
# Audio this far behind the newest decoded audio is stale (the start-up burst): dropped.
AUDIO_STALE_AFTER = 0.1
STATS_INTERVAL = 5.0
JOIN_TIMEOUT = 10.0
# At the end of a pulled input, the frames still queued and the audio in LiveKit's source (up to
# MAX_AUDIO_QUEUED) are published before leaving, within this long.
DRAIN_TIMEOUT = 1.0
# SIGTERM must end the session within 5 s: leaving the room, then the final state write.
LEAVE_TIMEOUT = 2.0
FINAL_WRITE_TIMEOUT = 2.0


Input = MediaInput[VideoFrame] | MediaInput[VideoFrame | EncodedUnit]


def _input(spec: IngressSpec, settings: MediaSettings, audio_plan: presets.AudioPlan) -> Input:
    """The session's input: the front door's FLV (RTMP), its WHIP channel, or the user's URL."""
    if spec.input_type is InputType.WHIP:
        options = WhipOptions(
            channel_url=settings.source_url,
            bind_ip=settings.pod_ip,
            pass_through=not spec.transcoding_enabled,
            audio_channels=audio_plan.channels,
            open_timeout=settings.open_timeout,
        )
        return WhipInput(options, asyncio.get_running_loop())
    rtmp = spec.input_type is InputType.RTMP
    return AvInput(
        InputOptions(
            url=settings.source_url,
            format=settings.input_format or ("flv" if rtmp else None),
            codecs=codecs.RTMP if rtmp else codecs.URL,
            realtime=spec.input_type is InputType.URL,
            audio_channels=audio_plan.channels,
            open_timeout=settings.open_timeout,
            read_timeout=settings.read_timeout,
        ),
        asyncio.get_running_loop(),
    )


class IngressClient(StatusWriter, Protocol):
    """What a session needs of the Kubernetes client (ingress_operator.kube.Kube)."""

    async def get_ingress(self, name: str) -> dict[str, Any]: ...


@dataclass(frozen=True)
class End:
    """How a session ended: the state to write (None: write nothing) and the exit code."""

    status: IngressStatus | None
    error: str | None = None
    exit_code: int = 0


TAKEN_OVER = End(None)


def failed(message: str) -> End:
    """An ERROR end; the message goes into the status and the log (one line, no traceback)."""
    return End(IngressStatus.ENDPOINT_ERROR, message, 1)


class Session:
    """Serves the session `settings.resource_id` of the ingress `settings.ingress_name`."""

    def __init__(
        self,
        settings: MediaSettings,
        kube: IngressClient,
        on_ingress_id: Callable[[str], None] = lambda _: None,
        publisher_factory: Callable[[], Publisher] = Publisher,
    ) -> None:
        self._settings = settings
        self._kube = kube
        self._on_ingress_id = on_ingress_id
        self._publisher_factory = publisher_factory
        self._ended: asyncio.Future[End] = asyncio.get_running_loop().create_future()
        self._tasks: list[asyncio.Task[None]] = []
        self._tracks: list[TrackInfo] = []
        self._audio: AudioOutput | None = None
        self._ingress_id = ""

    def stop(self) -> None:
        """End the session cleanly (SIGTERM): leave the room, state INACTIVE."""
        self._finish(End(IngressStatus.ENDPOINT_INACTIVE))

    def _finish(self, end: End) -> None:
        if not self._ended.done():
            self._ended.set_result(end)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        self._tasks.append(asyncio.create_task(self._guard(coro)))

    async def _guard(self, coro: Coroutine[Any, Any, None]) -> None:
        try:
            await coro
        except asyncio.CancelledError:
            raise
        except Exception as err:  # a bug: keep its traceback, end the session with an error
            log.exception("session task failed")
            self._finish(failed(f"internal error: {err}"))

    async def run(self) -> int:
        """Run the session to its end; returns the process exit code (0, or 1 after ERROR)."""
        settings = self._settings
        try:
            cr = LiveKitIngress.model_validate(await self._kube.get_ingress(settings.ingress_name))
        except ApiError as err:
            if err.status.code == 404:
                log.info("ingress is gone; nothing to serve")
                return 0
            log.error("could not read the ingress", extra={"error": str(err)})
            return 1
        except (httpx2.HTTPError, OSError, ValidationError) as err:
            log.error("could not read the ingress", extra={"error": str(err) or type(err).__name__})
            return 1
        current = cr.status.session
        if current is None or current.resource_id != settings.resource_id:
            log.info(
                "not the ingress's current session; exiting",
                extra={"current": current.resource_id if current else None},
            )
            return 0
        self._ingress_id = cr.ingress_id or ""
        self._on_ingress_id(self._ingress_id)
        reporter = StateReporter(self._kube, settings.ingress_name, settings.resource_id, cr.status.state)
        metrics.describe_session(self._ingress_id, settings.resource_id, cr.spec.input_type)
        metrics.set_state(IngressStatus.ENDPOINT_BUFFERING)

        spec = cr.spec
        audio_plan = presets.audio_plan(spec.audio)
        source = _input(spec, settings, audio_plan)
        source.ended.add_done_callback(lambda f: self._input_ended(spec, source, f.result()))
        source.start()
        publisher = self._publisher_factory()
        publisher.disconnected.add_done_callback(
            lambda f: self._finish(failed(f"disconnected from room {spec.room_name}: {f.result()}"))
        )
        self._spawn(self._serve(spec, source, publisher, reporter, audio_plan))
        end = await self._ended

        source.stop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            await asyncio.wait_for(publisher.close(), LEAVE_TIMEOUT)
        except Exception as err:  # leaving is best effort: the server times the participant out
            log.warning("could not leave the room cleanly", extra={"error": str(err) or type(err).__name__})
        if end.status is not None:
            try:
                await asyncio.wait_for(reporter.ended(end.status, end.error), FINAL_WRITE_TIMEOUT)
            except TimeoutError:
                log.warning("final state write timed out")
            metrics.set_state(end.status)
        log_end = log.error if end.exit_code else log.info
        log_end("session ended", extra={"status": end.status and end.status.value, "error": end.error})
        return end.exit_code

    def _input_ended(self, spec: IngressSpec, source: Input, error: InputError | None) -> None:
        if self._ended.done():  # the session ended first (and stopped the input)
            return
        if error is not None:
            self._finish(failed(error.message))
        elif spec.input_type is InputType.URL:
            # A pulled URL reaching its end is complete, once its last frames are out.
            self._spawn(self._complete(source))
        else:
            # A pushed stream ending goes back to waiting: whatever it still had is stale.
            self._finish(End(IngressStatus.ENDPOINT_INACTIVE))

    async def _complete(self, source: Input) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(DRAIN_TIMEOUT):
                # A pump that never started leaves its queue full: the timeout ends the wait.
                await asyncio.gather(source.video.drained(), source.audio.drained())
                if self._audio is not None:
                    await self._audio.source.wait_for_playout()
        self._finish(End(IngressStatus.ENDPOINT_COMPLETE))

    async def _serve(
        self,
        spec: IngressSpec,
        source: Input,
        publisher: Publisher,
        reporter: StateReporter,
        audio_plan: presets.AudioPlan,
    ) -> None:
        settings = self._settings
        room = spec.room_name or ""
        who = Participant(
            room=room,
            identity=spec.participant_identity,
            name=spec.participant_name or "",
            metadata=spec.participant_metadata or "",
            ingress_id=self._ingress_id,
            resource_id=settings.resource_id,
        )
        token = ingress_token(settings.livekit_api_key, settings.livekit_api_secret.get_secret_value(), who)
        # Joining takes about as long as opening the input: do both at once.
        join = asyncio.create_task(publisher.join(settings.livekit_url, token, JOIN_TIMEOUT))
        try:
            try:
                info = await asyncio.wait_for(asyncio.shield(source.opened), settings.open_timeout)
            except TimeoutError:
                self._finish(failed(source.no_media(settings.open_timeout).message))
                return
            video, audio = input_states(info, source.video_rates.rates(), source.audio_rates.rates())
            if not await reporter.buffering(video, audio):
                self._finish(TAKEN_OVER)
                return
            if not room:
                self._finish(failed("could not join room: the ingress has no room name"))
                return
            try:
                room_id = await join
            except JoinError as err:
                self._finish(failed(f"could not join room {room}: {err}"))
                return
        finally:
            join.cancel()
        log.info("joined room", extra={"room": room, "room_id": room_id})
        source.play()
        if info.video and isinstance(source, WhipInput) and source.options.pass_through:
            self._spawn(self._forward_video(spec, source, publisher, reporter, room_id))
        elif info.video:
            self._spawn(self._pump_video(spec, source, publisher, reporter, room_id))
        if info.audio:
            self._spawn(self._pump_audio(spec, source, publisher, reporter, room_id, audio_plan))
        while True:
            await asyncio.sleep(STATS_INTERVAL)
            video_rates, audio_rates = source.video_rates.rates(), source.audio_rates.rates()
            metrics.INPUT_BITRATE.labels("video").set(video_rates[0])
            metrics.INPUT_BITRATE.labels("audio").set(audio_rates[0])
            if not await reporter.inputs(*input_states(source.info(), video_rates, audio_rates)):
                self._finish(TAKEN_OVER)
                return

    async def _published(self, reporter: StateReporter, room_id: str, track: TrackInfo) -> None:
        log.info("track published", extra={"track": track.to_cr()})
        self._tracks.append(track)
        if not await reporter.publishing(room_id, list(self._tracks)):
            self._finish(TAKEN_OVER)

    async def _forward_video(
        self,
        spec: IngressSpec,
        source: WhipInput,
        publisher: Publisher,
        reporter: StateReporter,
        room_id: str,
    ) -> None:
        """Pass-through: the client's frames go into the room as they are, and the room's
        keyframe requests and bitrate target go back to the client."""
        unit = await source.video.get()
        assert isinstance(unit, EncodedUnit)
        try:
            output = await publisher.publish_encoded_video(unit, spec.video)
        except PublishError as err:
            self._finish(failed(f"could not publish the video track: {err}"))
            return
        self._spawn(self._published(reporter, room_id, output.info))
        published = metrics.FRAMES_PUBLISHED.labels("video")
        refused = metrics.FRAMES_DROPPED.labels("video", "refused")
        while True:
            feedback = output.source.take_feedback()
            if feedback.keyframe_requested:
                source.request_keyframe()
            if feedback.rate_control is not None:
                source.limit_bitrate(feedback.rate_control.target_bitrate_bps)
            if output.send(unit):
                published.inc()
            else:
                refused.inc()
            unit = await source.video.get()
            assert isinstance(unit, EncodedUnit)

    async def _pump_video(
        self, spec: IngressSpec, source: Input, publisher: Publisher, reporter: StateReporter, room_id: str
    ) -> None:
        frame = await source.video.get()
        assert isinstance(frame, VideoFrame)
        # The layers depend on the source's size: planned from the first picture.
        plan = presets.video_plan(spec.video, frame.width, frame.height)
        try:
            output = await publisher.publish_video(plan, spec.video)
        except PublishError as err:
            self._finish(failed(f"could not publish the video track: {err}"))
            return
        # Not awaited: a slow API server must not hold the first frames back.
        self._spawn(self._published(reporter, room_id, output.info))
        limiter = FrameRateLimiter(plan.frame_rate)
        published = metrics.FRAMES_PUBLISHED.labels("video")
        over_rate = metrics.FRAMES_DROPPED.labels("video", "rate")
        while True:
            if frame.time is None or limiter.admit(frame.time):
                output.source.capture_frame(output.converter.convert(frame))
                published.inc()
            else:
                over_rate.inc()
            frame = await source.video.get()
            assert isinstance(frame, VideoFrame)

    async def _pump_audio(
        self,
        spec: IngressSpec,
        source: Input,
        publisher: Publisher,
        reporter: StateReporter,
        room_id: str,
        plan: presets.AudioPlan,
    ) -> None:
        frame = await source.audio.get()
        try:
            output = await publisher.publish_audio(plan, spec.audio)
        except PublishError as err:
            self._finish(failed(f"could not publish the audio track: {err}"))
            return
        self._spawn(self._published(reporter, room_id, output.info))
        self._audio = output
        published = metrics.FRAMES_PUBLISHED.labels("audio")
        stale, queued = (
            metrics.FRAMES_DROPPED.labels("audio", "stale"),
            metrics.FRAMES_DROPPED.labels("audio", "queue"),
        )
        while True:
            if frame.time is not None and frame.time < source.audio_time - AUDIO_STALE_AFTER:
                stale.inc()
            elif output.source.queued_duration > MAX_AUDIO_QUEUED:
                queued.inc()
            else:
                await output.source.capture_frame(audio_frame(frame))
                published.inc()
            frame = await source.audio.get()
