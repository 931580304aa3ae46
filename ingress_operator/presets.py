"""Encoding presets and simulcast layer maths: the one place they live.

Everything here follows LiveKit's ingress service (livekit/ingress `pkg/params/presets.go`,
`pkg/params/params.go` and `filterAndSortLayersByQuality` in `pkg/media/webrtc_sink.go`), so an
ingress served by this operator publishes the same layers, sizes and bitrates LiveKit's would.
Where SPEC.md is looser, LiveKit wins: odd sides are rounded *up* to even (a layer may be one
pixel larger than an odd-sized source), the layer box is not turned for portrait sources, fitted
layers keep their preset bitrates, and custom options without layers use LiveKit's own
1280x720 @ 1.7 Mbit/s top layer rather than the 720p preset's 1.9 Mbit/s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

from ingress_operator.models import AudioOptions, VideoOptions, VideoPreset

_QUALITIES: Final = ("LOW", "MEDIUM", "HIGH")


@dataclass(frozen=True, slots=True)
class Layer:
    """One simulcast layer as encoded: quality, size in pixels and bitrate in bit/s."""

    quality: str
    width: int
    height: int
    bitrate: int


@dataclass(frozen=True, slots=True)
class VideoPlan:
    """How the video track is encoded: codec, frame rate and layers, lowest quality first."""

    codec: str
    frame_rate: float
    layers: tuple[Layer, ...]

    @property
    def top(self) -> Layer:
        """The best layer actually encoded (not always HIGH: a small source drops upper layers)."""
        return self.layers[-1]


@dataclass(frozen=True, slots=True)
class AudioPlan:
    """How the audio track is encoded (always Opus)."""

    channels: int
    bitrate: int
    dtx: bool


@dataclass(frozen=True, slots=True)
class _VideoPreset:
    width: int
    height: int
    frame_rate: float
    bitrate: int
    layer_count: int


_VIDEO_PRESETS: Final[dict[VideoPreset, _VideoPreset]] = {
    "H264_720P_30FPS_3_LAYERS": _VideoPreset(1280, 720, 30.0, 1_900_000, 3),
    "H264_1080P_30FPS_3_LAYERS": _VideoPreset(1920, 1080, 30.0, 3_500_000, 3),
    "H264_540P_25FPS_2_LAYERS": _VideoPreset(960, 540, 25.0, 1_000_000, 2),
    "H264_720P_30FPS_1_LAYER": _VideoPreset(1280, 720, 30.0, 1_900_000, 1),
    "H264_1080P_30FPS_1_LAYER": _VideoPreset(1920, 1080, 30.0, 3_500_000, 1),
    "H264_720P_30FPS_3_LAYERS_HIGH_MOTION": _VideoPreset(1280, 720, 30.0, 2_500_000, 3),
    "H264_1080P_30FPS_3_LAYERS_HIGH_MOTION": _VideoPreset(1920, 1080, 30.0, 4_500_000, 3),
    "H264_540P_25FPS_2_LAYERS_HIGH_MOTION": _VideoPreset(960, 540, 25.0, 1_300_000, 2),
    "H264_720P_30FPS_1_LAYER_HIGH_MOTION": _VideoPreset(1280, 720, 30.0, 2_500_000, 1),
    "H264_1080P_30FPS_1_LAYER_HIGH_MOTION": _VideoPreset(1920, 1080, 30.0, 4_500_000, 1),
}
_DEFAULT_VIDEO_PRESET: Final[VideoPreset] = "H264_720P_30FPS_3_LAYERS"

# Custom options without layers: LiveKit halves down from this top layer, which is *not* the
# 720p preset's (1.7 Mbit/s rather than 1.9).
_CUSTOM_TOP: Final = Layer("HIGH", 1280, 720, 1_700_000)
_CUSTOM_LAYER_COUNT: Final = 3

# A custom layer given with bitrate 0 is scaled from this reference (1080p30 at 3.5 Mbit/s).
_REF_BITRATE: Final = 3_500_000
_REF_WIDTH: Final = 1920
_REF_HEIGHT: Final = 1080
_REF_FRAME_RATE: Final = 30.0

_AUDIO_PRESETS: Final[dict[str, AudioPlan]] = {
    "OPUS_STEREO_96KBPS": AudioPlan(channels=2, bitrate=96_000, dtx=True),
    "OPUS_MONO_64KBS": AudioPlan(channels=1, bitrate=64_000, dtx=True),
}
_DEFAULT_AUDIO_PRESET: Final = "OPUS_STEREO_96KBPS"


def _pow_three_quarters(x: float) -> float:
    """x ** 0.75 evaluated the way Go's math.Pow does it, exp(-0.25 * ln x) * x.

    Bitrates are truncated to integers, so the last bit of the ratio can decide the result;
    following Go's evaluation order keeps us on LiveKit's side of such ties.
    """
    if x == 1:
        return 1.0
    if x == 0:
        return 0.0
    return math.exp(-0.25 * math.log(x)) * x


def _scaled_bitrate(
    ref_bitrate: int,
    ref_width: int,
    ref_height: int,
    ref_frame_rate: float,
    width: int,
    height: int,
    frame_rate: float,
) -> int:
    """LiveKit's bitrate model: ref * (fps ratio)^0.75 * (area ratio)^0.75, truncated."""
    ratio = _pow_three_quarters(float(frame_rate) / float(ref_frame_rate))
    ratio = ratio * _pow_three_quarters(float(width) * float(height) / (float(ref_width) * float(ref_height)))
    return int(float(ref_bitrate) * ratio)


def _halved_layers(top: Layer, count: int) -> list[Layer]:
    """The top layer plus count-1 layers below it, each side shifted right by the layer's depth.

    Qualities are counted up from LOW, so two layers are LOW/HIGH (no MEDIUM), as in LiveKit.
    """
    layers = [Layer("HIGH", top.width, top.height, top.bitrate)]
    for depth in range(1, count):
        width, height = top.width >> depth, top.height >> depth
        bitrate = _scaled_bitrate(top.bitrate, top.width, top.height, 1, width, height, 1)
        layers.append(Layer(_QUALITIES[count - 1 - depth], width, height, bitrate))
    return layers


def _fit_to_source(layer: Layer, source_width: int, source_height: int) -> Layer:
    """The layer resized to the source's aspect ratio inside the layer's own box.

    The box is not turned to the source's orientation (a portrait source under the 720p preset
    gets 406x720, not 720x1280), and the bitrate stays the preset's, exactly as LiveKit does.
    """
    width, height = source_width, source_height
    if width > layer.width:
        width = layer.width
        height = width * source_height // source_width
    if height > layer.height:
        height = layer.height
        width = height * source_width // source_height
    # LiveKit rounds odd sides *up* to even, so an odd-sized source can get a layer one pixel
    # larger than itself on that side; we keep that rather than differ from LiveKit.
    width = (width + 1) >> 1 << 1
    height = (height + 1) >> 1 << 1
    return Layer(layer.quality, width, height, layer.bitrate)


def _order_and_fit(layers: list[Layer], source_width: int, source_height: int) -> tuple[Layer, ...]:
    """Layers lowest quality first, fitted to the source; layers above the first one that covers
    the whole source are dropped (they would only repeat it)."""
    by_quality = {layer.quality: layer for layer in layers}
    ordered = [by_quality[q] for q in _QUALITIES if q in by_quality]
    if source_width <= 0 or source_height <= 0:
        # Size not known yet (audio-only probe, before caps): LiveKit never plans without caps,
        # so the configured sizes are the best answer.
        return tuple(ordered)
    fitted: list[Layer] = []
    for layer in ordered:
        layer = _fit_to_source(layer, source_width, source_height)
        fitted.append(layer)
        if layer.width >= source_width and layer.height >= source_height:
            break
    return tuple(fitted)


def video_plan(video: VideoOptions | None, source_width: int, source_height: int) -> VideoPlan:
    """The video encoding for an ingress's video options and a source of the given size.

    No options (or neither preset nor custom options) means LiveKit's default preset
    H264_720P_30FPS_3_LAYERS. A source size of 0 (unknown) leaves the layers at their configured
    sizes; otherwise they are fitted to the source's aspect ratio, layers above the first that
    covers the source are dropped, and no side exceeds the source's except by LiveKit's round-up
    of an odd side to even.
    """
    options = video.options if video is not None else None
    if options is None:
        preset = _VIDEO_PRESETS[video.preset if video is not None and video.preset else _DEFAULT_VIDEO_PRESET]
        top = Layer("HIGH", preset.width, preset.height, preset.bitrate)
        # Presets are all H.264 (LiveKit's H264_BASELINE).
        return VideoPlan(
            codec="H264",
            frame_rate=preset.frame_rate,
            layers=_order_and_fit(_halved_layers(top, preset.layer_count), source_width, source_height),
        )

    codec = "VP8" if options.video_codec == "VP8" else "H264"
    frame_rate = options.frame_rate if options.frame_rate > 0 else _REF_FRAME_RATE
    if options.layers:
        layers = [
            Layer(
                layer.quality,
                layer.width,
                layer.height,
                layer.bitrate
                or _scaled_bitrate(
                    _REF_BITRATE,
                    _REF_WIDTH,
                    _REF_HEIGHT,
                    _REF_FRAME_RATE,
                    layer.width,
                    layer.height,
                    frame_rate,
                ),
            )
            for layer in options.layers
        ]
    else:
        # LiveKit's default ladder ignores the chosen frame rate for its bitrates.
        layers = _halved_layers(_CUSTOM_TOP, _CUSTOM_LAYER_COUNT)
    return VideoPlan(
        codec=codec, frame_rate=frame_rate, layers=_order_and_fit(layers, source_width, source_height)
    )


def audio_plan(audio: AudioOptions | None) -> AudioPlan:
    """The Opus encoding for an ingress's audio options (LiveKit's defaults filled in).

    No options means OPUS_STEREO_96KBPS. Custom options default to stereo, and a bitrate of 0
    means 64 kbit/s for mono, 96 kbit/s otherwise; DTX is on unless disabled.
    """
    options = audio.options if audio is not None else None
    if options is None:
        return _AUDIO_PRESETS[audio.preset if audio is not None and audio.preset else _DEFAULT_AUDIO_PRESET]
    channels = options.channels or 2
    bitrate = options.bitrate or (64_000 if channels == 1 else 96_000)
    return AudioPlan(channels=channels, bitrate=bitrate, dtx=not options.disable_dtx)
