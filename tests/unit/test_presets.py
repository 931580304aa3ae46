"""Encoding presets and layer maths against LiveKit's ingress (livekit/ingress pkg/params, pkg/media).

Every expected number is a literal worked out from LiveKit's rules, not recomputed here:
- lower preset layers: sides >> depth, bitrate = int(top * (area ratio) ** 0.75)
  (1/4 of the area -> x0.35355339…, 1/16 -> x0.125);
- custom layers with bitrate 0: int(3_500_000 * (fps/30) ** 0.75 * (w*h / (1920*1080)) ** 0.75);
  LiveKit's own test gives 2_081_112 (1920x1080 @ 15) and 260_139 (480x270 @ 15);
- custom options without layers: 1280x720 @ 1_700_000 halved (601_040, 212_500 in LiveKit's test);
- fitting to the source: width capped to the box (height by integer aspect), then height capped
  (width by integer aspect), odd sides rounded up; layers above the first covering the source dropped;
  bitrates are not rescaled.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from ingress_operator.models import AudioOptions, VideoOptions
from ingress_operator.presets import AudioPlan, Layer, VideoPlan, audio_plan, video_plan

L = Layer

# --- presets at a 1920x1080 source (and 0x0, unknown: configured sizes unchanged) ------------------

LADDERS_1080P_SOURCE: list[tuple[str, float, tuple[Layer, ...]]] = [
    (
        "H264_720P_30FPS_3_LAYERS",
        30.0,
        (L("LOW", 320, 180, 237_500), L("MEDIUM", 640, 360, 671_751), L("HIGH", 1280, 720, 1_900_000)),
    ),
    (
        "H264_1080P_30FPS_3_LAYERS",
        30.0,
        (L("LOW", 480, 270, 437_500), L("MEDIUM", 960, 540, 1_237_436), L("HIGH", 1920, 1080, 3_500_000)),
    ),
    ("H264_540P_25FPS_2_LAYERS", 25.0, (L("LOW", 480, 270, 353_553), L("HIGH", 960, 540, 1_000_000))),
    ("H264_720P_30FPS_1_LAYER", 30.0, (L("HIGH", 1280, 720, 1_900_000),)),
    ("H264_1080P_30FPS_1_LAYER", 30.0, (L("HIGH", 1920, 1080, 3_500_000),)),
    (
        "H264_720P_30FPS_3_LAYERS_HIGH_MOTION",
        30.0,
        (L("LOW", 320, 180, 312_500), L("MEDIUM", 640, 360, 883_883), L("HIGH", 1280, 720, 2_500_000)),
    ),
    (
        "H264_1080P_30FPS_3_LAYERS_HIGH_MOTION",
        30.0,
        (L("LOW", 480, 270, 562_500), L("MEDIUM", 960, 540, 1_590_990), L("HIGH", 1920, 1080, 4_500_000)),
    ),
    (
        "H264_540P_25FPS_2_LAYERS_HIGH_MOTION",
        25.0,
        (L("LOW", 480, 270, 459_619), L("HIGH", 960, 540, 1_300_000)),
    ),
    ("H264_720P_30FPS_1_LAYER_HIGH_MOTION", 30.0, (L("HIGH", 1280, 720, 2_500_000),)),
    ("H264_1080P_30FPS_1_LAYER_HIGH_MOTION", 30.0, (L("HIGH", 1920, 1080, 4_500_000),)),
]


@pytest.mark.parametrize(("width", "height"), [(1920, 1080), (0, 0), (1920, 0)])
@pytest.mark.parametrize(("preset", "fps", "layers"), LADDERS_1080P_SOURCE)
def test_preset_full_hd_or_unknown_source(
    preset: str, fps: float, layers: tuple[Layer, ...], width: int, height: int
) -> None:
    plan = video_plan(VideoOptions.model_validate({"preset": preset}), width, height)
    assert plan == VideoPlan(codec="H264", frame_rate=fps, layers=layers)


# --- presets at other source sizes -----------------------------------------------------------------

SOURCE_CASES: list[tuple[str, int, int, tuple[Layer, ...]]] = [
    # 720p source: the 1080p ladders' top layer shrinks to the source, bitrate unchanged.
    (
        "H264_720P_30FPS_3_LAYERS",
        1280,
        720,
        (L("LOW", 320, 180, 237_500), L("MEDIUM", 640, 360, 671_751), L("HIGH", 1280, 720, 1_900_000)),
    ),
    (
        "H264_1080P_30FPS_3_LAYERS",
        1280,
        720,
        (L("LOW", 480, 270, 437_500), L("MEDIUM", 960, 540, 1_237_436), L("HIGH", 1280, 720, 3_500_000)),
    ),
    ("H264_540P_25FPS_2_LAYERS", 1280, 720, (L("LOW", 480, 270, 353_553), L("HIGH", 960, 540, 1_000_000))),
    ("H264_1080P_30FPS_1_LAYER", 1280, 720, (L("HIGH", 1280, 720, 3_500_000),)),
    (
        "H264_1080P_30FPS_3_LAYERS_HIGH_MOTION",
        1280,
        720,
        (L("LOW", 480, 270, 562_500), L("MEDIUM", 960, 540, 1_590_990), L("HIGH", 1280, 720, 4_500_000)),
    ),
    ("H264_1080P_30FPS_1_LAYER_HIGH_MOTION", 1280, 720, (L("HIGH", 1280, 720, 4_500_000),)),
    # 640x360 source, smaller than the preset: the first layer covering it is the last one kept.
    ("H264_720P_30FPS_3_LAYERS", 640, 360, (L("LOW", 320, 180, 237_500), L("MEDIUM", 640, 360, 671_751))),
    (
        "H264_1080P_30FPS_3_LAYERS",
        640,
        360,
        (L("LOW", 480, 270, 437_500), L("MEDIUM", 640, 360, 1_237_436)),
    ),
    ("H264_540P_25FPS_2_LAYERS", 640, 360, (L("LOW", 480, 270, 353_553), L("HIGH", 640, 360, 1_000_000))),
    ("H264_720P_30FPS_1_LAYER", 640, 360, (L("HIGH", 640, 360, 1_900_000),)),
    ("H264_1080P_30FPS_1_LAYER", 640, 360, (L("HIGH", 640, 360, 3_500_000),)),
    (
        "H264_720P_30FPS_3_LAYERS_HIGH_MOTION",
        640,
        360,
        (L("LOW", 320, 180, 312_500), L("MEDIUM", 640, 360, 883_883)),
    ),
    (
        "H264_1080P_30FPS_3_LAYERS_HIGH_MOTION",
        640,
        360,
        (L("LOW", 480, 270, 562_500), L("MEDIUM", 640, 360, 1_590_990)),
    ),
    (
        "H264_540P_25FPS_2_LAYERS_HIGH_MOTION",
        640,
        360,
        (L("LOW", 480, 270, 459_619), L("HIGH", 640, 360, 1_300_000)),
    ),
    ("H264_720P_30FPS_1_LAYER_HIGH_MOTION", 640, 360, (L("HIGH", 640, 360, 2_500_000),)),
    ("H264_1080P_30FPS_1_LAYER_HIGH_MOTION", 640, 360, (L("HIGH", 640, 360, 4_500_000),)),
    # Portrait sources: fitted inside the (landscape) box, odd widths rounded up (405 → 406).
    (
        "H264_720P_30FPS_3_LAYERS",
        1080,
        1920,
        (L("LOW", 102, 180, 237_500), L("MEDIUM", 202, 360, 671_751), L("HIGH", 406, 720, 1_900_000)),
    ),
    (
        "H264_720P_30FPS_3_LAYERS",
        720,
        1280,
        (L("LOW", 102, 180, 237_500), L("MEDIUM", 202, 360, 671_751), L("HIGH", 406, 720, 1_900_000)),
    ),
    (
        "H264_1080P_30FPS_3_LAYERS",
        1080,
        1920,
        (L("LOW", 152, 270, 437_500), L("MEDIUM", 304, 540, 1_237_436), L("HIGH", 608, 1080, 3_500_000)),
    ),
    (
        "H264_1080P_30FPS_3_LAYERS",
        720,
        1280,
        (L("LOW", 152, 270, 437_500), L("MEDIUM", 304, 540, 1_237_436), L("HIGH", 608, 1080, 3_500_000)),
    ),
    ("H264_540P_25FPS_2_LAYERS", 1080, 1920, (L("LOW", 152, 270, 353_553), L("HIGH", 304, 540, 1_000_000))),
    ("H264_720P_30FPS_1_LAYER", 720, 1280, (L("HIGH", 406, 720, 1_900_000),)),
    # 4:3 source.
    (
        "H264_720P_30FPS_3_LAYERS",
        1440,
        1080,
        (L("LOW", 240, 180, 237_500), L("MEDIUM", 480, 360, 671_751), L("HIGH", 960, 720, 1_900_000)),
    ),
    (
        "H264_1080P_30FPS_3_LAYERS",
        1440,
        1080,
        (L("LOW", 360, 270, 437_500), L("MEDIUM", 720, 540, 1_237_436), L("HIGH", 1440, 1080, 3_500_000)),
    ),
    ("H264_540P_25FPS_2_LAYERS", 1440, 1080, (L("LOW", 360, 270, 353_553), L("HIGH", 720, 540, 1_000_000))),
    # Not quite 16:9: integer heights 179/359/719 are rounded up to even.
    (
        "H264_720P_30FPS_3_LAYERS",
        1918,
        1078,
        (L("LOW", 320, 180, 237_500), L("MEDIUM", 640, 360, 671_751), L("HIGH", 1280, 720, 1_900_000)),
    ),
    (
        "H264_1080P_30FPS_3_LAYERS",
        1918,
        1078,
        (L("LOW", 480, 270, 437_500), L("MEDIUM", 960, 540, 1_237_436), L("HIGH", 1918, 1078, 3_500_000)),
    ),
    # Odd sides: LiveKit rounds up, so the covering layer is one pixel larger than the source.
    (
        "H264_720P_30FPS_3_LAYERS",
        853,
        479,
        (L("LOW", 320, 180, 237_500), L("MEDIUM", 640, 360, 671_751), L("HIGH", 854, 480, 1_900_000)),
    ),
    ("H264_720P_30FPS_3_LAYERS", 639, 359, (L("LOW", 320, 180, 237_500), L("MEDIUM", 640, 360, 671_751))),
    # Tiny source: even the LOW layer covers it.
    ("H264_720P_30FPS_3_LAYERS", 160, 90, (L("LOW", 160, 90, 237_500),)),
    ("H264_720P_30FPS_1_LAYER", 160, 90, (L("HIGH", 160, 90, 1_900_000),)),
]


@pytest.mark.parametrize(("preset", "width", "height", "layers"), SOURCE_CASES)
def test_preset_fitted_to_source(preset: str, width: int, height: int, layers: tuple[Layer, ...]) -> None:
    plan = video_plan(VideoOptions.model_validate({"preset": preset}), width, height)
    assert plan.codec == "H264"
    assert plan.layers == layers


# --- defaults ------------------------------------------------------------------------------------

DEFAULT_720P = (L("LOW", 320, 180, 237_500), L("MEDIUM", 640, 360, 671_751), L("HIGH", 1280, 720, 1_900_000))


@pytest.mark.parametrize(
    "video",
    [None, {}, {"name": "cam"}, {"source": "CAMERA"}],
    ids=["none", "empty", "name-only", "source-only"],
)
def test_default_video_preset(video: dict[str, Any] | None) -> None:
    options = None if video is None else VideoOptions.model_validate(video)
    assert video_plan(options, 1920, 1080) == VideoPlan("H264", 30.0, DEFAULT_720P)


# --- custom options ------------------------------------------------------------------------------

CUSTOM_DEFAULT_LADDER = (
    L("LOW", 320, 180, 212_500),
    L("MEDIUM", 640, 360, 601_040),
    L("HIGH", 1280, 720, 1_700_000),
)

CUSTOM_CASES: list[tuple[str, dict[str, Any], int, int, VideoPlan]] = [
    ("no-layers", {}, 1920, 1080, VideoPlan("H264", 30.0, CUSTOM_DEFAULT_LADDER)),
    ("no-layers-unknown-source", {}, 0, 0, VideoPlan("H264", 30.0, CUSTOM_DEFAULT_LADDER)),
    (
        "h264-baseline",
        {"videoCodec": "H264_BASELINE"},
        1920,
        1080,
        VideoPlan("H264", 30.0, CUSTOM_DEFAULT_LADDER),
    ),
    # The default ladder's bitrates do not follow the frame rate.
    (
        "vp8-60fps-no-layers",
        {"videoCodec": "VP8", "frameRate": 60},
        1920,
        1080,
        VideoPlan("VP8", 60.0, CUSTOM_DEFAULT_LADDER),
    ),
    (
        "no-layers-portrait",
        {"frameRate": 0},
        1080,
        1920,
        VideoPlan(
            "H264",
            30.0,
            (L("LOW", 102, 180, 212_500), L("MEDIUM", 202, 360, 601_040), L("HIGH", 406, 720, 1_700_000)),
        ),
    ),
    (
        "no-layers-small-source",
        {},
        640,
        360,
        VideoPlan("H264", 30.0, (L("LOW", 320, 180, 212_500), L("MEDIUM", 640, 360, 601_040))),
    ),
    # LiveKit's params_test: 15 fps, bitrates from the 1080p30 @ 3.5 Mbit/s reference.
    (
        "layers-15fps-default-bitrates",
        {
            "frameRate": 15,
            "layers": [
                {"quality": "HIGH", "width": 1920, "height": 1080},
                {"quality": "LOW", "width": 480, "height": 270},
            ],
        },
        1920,
        1080,
        VideoPlan("H264", 15.0, (L("LOW", 480, 270, 260_139), L("HIGH", 1920, 1080, 2_081_112))),
    ),
    (
        "layers-fps-0-default-bitrates",
        {
            "frameRate": 0,
            "layers": [
                {"quality": "LOW", "width": 320, "height": 180},
                {"quality": "MEDIUM", "width": 640, "height": 360},
                {"quality": "HIGH", "width": 1280, "height": 720},
            ],
        },
        1280,
        720,
        VideoPlan(
            "H264",
            30.0,
            (L("LOW", 320, 180, 238_144), L("MEDIUM", 640, 360, 673_575), L("HIGH", 1280, 720, 1_905_158)),
        ),
    ),
    (
        "vp8-layers-60fps",
        {
            "videoCodec": "VP8",
            "frameRate": 60,
            "layers": [
                {"quality": "HIGH", "width": 1280, "height": 720},
                {"quality": "LOW", "width": 640, "height": 360},
            ],
        },
        1920,
        1080,
        VideoPlan("VP8", 60.0, (L("LOW", 640, 360, 1_132_814), L("HIGH", 1280, 720, 3_204_082))),
    ),
    (
        "layers-25fps-mixed-bitrates",
        {
            "frameRate": 25,
            "layers": [
                {"quality": "HIGH", "width": 1280, "height": 720},
                {"quality": "MEDIUM", "width": 960, "height": 540, "bitrate": 800_000},
            ],
        },
        1920,
        1080,
        VideoPlan("H264", 25.0, (L("MEDIUM", 960, 540, 800_000), L("HIGH", 1280, 720, 1_661_671))),
    ),
    (
        "layers-explicit-bitrates-unsorted",
        {
            "frameRate": 24.5,
            "layers": [
                {"quality": "HIGH", "width": 1280, "height": 720, "bitrate": 2_000_000},
                {"quality": "MEDIUM", "width": 640, "height": 360, "bitrate": 700_000},
                {"quality": "LOW", "width": 320, "height": 180, "bitrate": 200_000},
            ],
        },
        0,
        0,
        VideoPlan(
            "H264",
            24.5,
            (L("LOW", 320, 180, 200_000), L("MEDIUM", 640, 360, 700_000), L("HIGH", 1280, 720, 2_000_000)),
        ),
    ),
    (
        "layers-small-source-drops-high",
        {
            "layers": [
                {"quality": "LOW", "width": 320, "height": 180, "bitrate": 200_000},
                {"quality": "MEDIUM", "width": 640, "height": 360, "bitrate": 700_000},
                {"quality": "HIGH", "width": 1280, "height": 720, "bitrate": 2_000_000},
            ],
        },
        640,
        360,
        VideoPlan("H264", 30.0, (L("LOW", 320, 180, 200_000), L("MEDIUM", 640, 360, 700_000))),
    ),
    (
        "layer-portrait-source",
        {"layers": [{"quality": "HIGH", "width": 1280, "height": 720}]},
        1080,
        1920,
        VideoPlan("H264", 30.0, (L("HIGH", 406, 720, 1_905_158),)),
    ),
    (
        "layer-reference-size",
        {"frameRate": 30, "layers": [{"quality": "HIGH", "width": 1920, "height": 1080}]},
        1920,
        1080,
        VideoPlan("H264", 30.0, (L("HIGH", 1920, 1080, 3_500_000),)),
    ),
]


@pytest.mark.parametrize(
    ("options", "width", "height", "expected"),
    [case[1:] for case in CUSTOM_CASES],
    ids=[case[0] for case in CUSTOM_CASES],
)
def test_custom_video_options(options: dict[str, Any], width: int, height: int, expected: VideoPlan) -> None:
    video = VideoOptions.model_validate({"options": options})
    assert video_plan(video, width, height) == expected


def test_top_is_last_layer() -> None:
    assert video_plan(None, 1920, 1080).top == L("HIGH", 1280, 720, 1_900_000)
    # A small source drops HIGH, so the top is the MEDIUM layer.
    assert video_plan(None, 640, 360).top == L("MEDIUM", 640, 360, 671_751)


def test_plans_are_frozen_with_slots() -> None:
    plan = video_plan(None, 0, 0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.frame_rate = 25.0  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        plan.top.bitrate = 1  # type: ignore[misc]
    assert not hasattr(plan, "__dict__")
    assert not hasattr(audio_plan(None), "__dict__")


# --- audio ---------------------------------------------------------------------------------------

AUDIO_CASES: list[tuple[str, dict[str, Any] | None, AudioPlan]] = [
    ("none", None, AudioPlan(2, 96_000, True)),
    ("empty", {}, AudioPlan(2, 96_000, True)),
    ("name-only", {"name": "mic", "source": "MICROPHONE"}, AudioPlan(2, 96_000, True)),
    ("preset-stereo", {"preset": "OPUS_STEREO_96KBPS"}, AudioPlan(2, 96_000, True)),
    ("preset-mono", {"preset": "OPUS_MONO_64KBS"}, AudioPlan(1, 64_000, True)),
    ("options-empty", {"options": {}}, AudioPlan(2, 96_000, True)),
    ("options-opus", {"options": {"audioCodec": "OPUS"}}, AudioPlan(2, 96_000, True)),
    ("options-mono-default-bitrate", {"options": {"channels": 1}}, AudioPlan(1, 64_000, True)),
    ("options-stereo-default-bitrate", {"options": {"channels": 2}}, AudioPlan(2, 96_000, True)),
    ("options-mono-bitrate", {"options": {"channels": 1, "bitrate": 32_000}}, AudioPlan(1, 32_000, True)),
    (
        "options-no-dtx",
        {"options": {"channels": 2, "bitrate": 128_000, "disableDtx": True}},
        AudioPlan(2, 128_000, False),
    ),
    ("options-dtx-default-channels", {"options": {"disableDtx": True}}, AudioPlan(2, 96_000, False)),
    ("options-bitrate-only", {"options": {"bitrate": 48_000}}, AudioPlan(2, 48_000, True)),
]


@pytest.mark.parametrize(
    ("audio", "expected"),
    [case[1:] for case in AUDIO_CASES],
    ids=[case[0] for case in AUDIO_CASES],
)
def test_audio_plan(audio: dict[str, Any] | None, expected: AudioPlan) -> None:
    options = None if audio is None else AudioOptions.model_validate(audio)
    assert audio_plan(options) == expected
