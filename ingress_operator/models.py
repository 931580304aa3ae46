"""The LiveKitIngress custom resource as pydantic models: the one mapping between the CR,
LiveKit's protobuf messages and the Twirp JSON API.

The CR spells fields in camelCase and enums by their protobuf names, so a spec's `audio` and
`video` are exactly protobuf JSON; only `inputType` is shortened (`RTMP` for `RTMP_INPUT`).
Field-level rules (types, enums, ranges) live in the models; the rules LiveKit checks across
fields live in `check_rules`, which names the offending field.
"""

from __future__ import annotations

import enum
import re
import urllib.parse
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from google.protobuf import json_format
from livekit.protocol import ingress as pb
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from ingress_operator.errors import InvalidArgument

GROUP = "ingress.lkop.dev"
VERSION = "v1alpha1"
PLURAL = "livekitingresses"
KIND = "LiveKitIngress"
ID_LABEL = f"{GROUP}/id"
# The operator's finalizer: it ends the session and removes owned objects before the CR goes.
FINALIZER = f"{GROUP}/finalizer"
STREAM_KEY_FIELD = "streamKey"


def stream_key_secret_name(ingress_name: str) -> str:
    """The owned Secret that holds an ingress's generated stream key."""
    return f"{ingress_name}-stream-key"


class InputType(enum.StrEnum):
    """How media reaches the ingress."""

    RTMP = "RTMP"
    WHIP = "WHIP"
    URL = "URL"

    @property
    def proto(self) -> int:
        return pb.IngressInput.Value(f"{self.value}_INPUT")


class IngressStatus(enum.StrEnum):
    """IngressState.Status by its protobuf name."""

    ENDPOINT_INACTIVE = "ENDPOINT_INACTIVE"
    ENDPOINT_BUFFERING = "ENDPOINT_BUFFERING"
    ENDPOINT_PUBLISHING = "ENDPOINT_PUBLISHING"
    ENDPOINT_ERROR = "ENDPOINT_ERROR"
    ENDPOINT_COMPLETE = "ENDPOINT_COMPLETE"


VideoPreset = Literal[
    "H264_720P_30FPS_3_LAYERS",
    "H264_1080P_30FPS_3_LAYERS",
    "H264_540P_25FPS_2_LAYERS",
    "H264_720P_30FPS_1_LAYER",
    "H264_1080P_30FPS_1_LAYER",
    "H264_720P_30FPS_3_LAYERS_HIGH_MOTION",
    "H264_1080P_30FPS_3_LAYERS_HIGH_MOTION",
    "H264_540P_25FPS_2_LAYERS_HIGH_MOTION",
    "H264_720P_30FPS_1_LAYER_HIGH_MOTION",
    "H264_1080P_30FPS_1_LAYER_HIGH_MOTION",
]
AudioPreset = Literal["OPUS_STEREO_96KBPS", "OPUS_MONO_64KBS"]
VideoSource = Literal["UNKNOWN", "CAMERA", "SCREEN_SHARE"]
AudioSource = Literal["UNKNOWN", "MICROPHONE", "SCREEN_SHARE_AUDIO"]
VideoCodec = Literal["DEFAULT_VC", "H264_BASELINE", "VP8"]
AudioCodec = Literal["DEFAULT_AC", "OPUS"]
Quality = Literal["LOW", "MEDIUM", "HIGH"]


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", use_enum_values=False
    )

    def to_cr(self) -> dict[str, Any]:
        """The camelCase dict stored in the CR (unset fields left out)."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


EvenSide = Annotated[int, Field(ge=2, le=8192, multiple_of=2, description="pixels, even")]


class VideoLayer(_Model):
    """One simulcast layer of custom video options."""

    quality: Quality = Field("LOW", description="LOW, MEDIUM or HIGH; one layer per quality")
    width: EvenSide
    height: EvenSide
    bitrate: int = Field(0, ge=0, description="bit/s; 0 means the default for the size")


class VideoEncodingOptions(_Model):
    """Custom video encoding: codec, frame rate and layers (lower layers computed when omitted)."""

    video_codec: VideoCodec = Field("DEFAULT_VC", description="DEFAULT_VC (H.264), H264_BASELINE or VP8")
    frame_rate: float = Field(
        0, ge=0, allow_inf_nan=False, description="frames per second; 0 means the default (30)"
    )
    layers: list[VideoLayer] = Field(default_factory=list, max_length=3)


class AudioEncodingOptions(_Model):
    """Custom audio encoding (Opus)."""

    audio_codec: AudioCodec = Field("DEFAULT_AC", description="DEFAULT_AC or OPUS (both Opus)")
    bitrate: int = Field(0, ge=0, description="bit/s; 0 means the default")
    disable_dtx: bool = False
    channels: int = Field(0, ge=0, le=2, description="1 or 2; 0 means the default (2)")


class VideoOptions(_Model):
    """The published video track: name, source and a preset or custom options (not both)."""

    name: str | None = None
    source: VideoSource = "UNKNOWN"
    preset: VideoPreset | None = Field(None, description="a video encoding preset (SPEC.md Presets)")
    options: VideoEncodingOptions | None = None


class AudioOptions(_Model):
    """The published audio track: name, source and a preset or custom options (not both)."""

    name: str | None = None
    source: AudioSource = "UNKNOWN"
    preset: AudioPreset | None = Field(None, description="an audio encoding preset")
    options: AudioEncodingOptions | None = None


class SecretKeyRef(_Model):
    """A key of a Secret in the ingress's namespace."""

    name: str = Field(min_length=1, max_length=253, description="Secret name")
    key: str = Field(STREAM_KEY_FIELD, min_length=1, description="key within the Secret's data")


class IngressSpec(_Model):
    """What the user asks for: LiveKit's CreateIngressRequest, camelCased."""

    # In the order LiveKit checks them (video before audio): among field errors, the first
    # reported is LiveKit's first.

    input_type: InputType = Field(description="RTMP, WHIP or URL; immutable")
    name: str | None = Field(None, description="a human-readable name")
    room_name: str | None = Field(None, description="the LiveKit room to publish into")
    participant_identity: str = Field(min_length=1, description="identity of the publishing participant")
    participant_name: str | None = None
    participant_metadata: str | None = None
    url: str | None = Field(None, description="URL input only: the http(s) or srt source to pull")
    enable_transcoding: bool | None = Field(
        None, description="unset means true for RTMP and URL, false for WHIP; false only for WHIP"
    )
    enabled: bool | None = Field(None, description="unset means true; false refuses new input")
    video: VideoOptions | None = None
    audio: AudioOptions | None = None
    stream_key_secret_ref: SecretKeyRef | None = Field(
        None,
        description="RTMP/WHIP: take the stream key from this Secret instead of generating one",
    )

    @property
    def transcoding_enabled(self) -> bool:
        """The effective transcoding flag (LiveKit's defaults when unset)."""
        if self.enable_transcoding is None:
            return self.input_type is not InputType.WHIP
        return self.enable_transcoding

    @property
    def reusable(self) -> bool:
        return self.input_type is not InputType.URL


class InputVideoState(_Model):
    mime_type: str = ""
    average_bitrate: int = 0
    width: int = 0
    height: int = 0
    framerate: float = 0


class InputAudioState(_Model):
    mime_type: str = ""
    average_bitrate: int = 0
    channels: int = 0
    sample_rate: int = 0


class TrackInfo(_Model):
    """The parts of a published track's TrackInfo kept in the status."""

    sid: str = ""
    type: Literal["AUDIO", "VIDEO", "DATA"] = "AUDIO"
    name: str = ""
    source: str = "UNKNOWN"
    mime_type: str = ""
    width: int = 0
    height: int = 0
    simulcast: bool = False


class IngressState(_Model):
    """LiveKit's IngressState; times as RFC 3339 in the CR, Unix nanoseconds on the wire."""

    status: IngressStatus = IngressStatus.ENDPOINT_INACTIVE
    error: str | None = None
    video: InputVideoState | None = None
    audio: InputAudioState | None = None
    room_id: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    updated_at: datetime | None = None
    resource_id: str | None = None
    tracks: list[TrackInfo] = Field(default_factory=list)

    def to_proto(self) -> pb.IngressState:
        msg = pb.IngressState(
            status=pb.IngressState.Status.Value(self.status.value),  # type: ignore[arg-type]
            error=self.error or "",
            room_id=self.room_id or "",
            started_at=_nanos(self.started_at),
            ended_at=_nanos(self.ended_at),
            updated_at=_nanos(self.updated_at),
            resource_id=self.resource_id or "",
        )
        if self.video:
            json_format.ParseDict(self.video.to_cr(), msg.video)
        if self.audio:
            json_format.ParseDict(self.audio.to_cr(), msg.audio)
        for track in self.tracks:
            json_format.ParseDict(track.to_cr(), msg.tracks.add(), ignore_unknown_fields=True)
        return msg


class Condition(_Model):
    """A standard Kubernetes condition (metav1.Condition)."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(min_length=1)
    message: str = ""
    last_transition_time: datetime
    observed_generation: int | None = None


class Session(_Model):
    """A live session of an ingress: asked for by the front door (RTMP, WHIP) or the operator
    (URL), served by one media pod, removed by the operator when that pod is done."""

    resource_id: str = Field(min_length=1, description="RT_/WH_/UR_ id of the session")
    source: str = Field(min_length=1, description="where the media pod reads the input from")
    generation: int = Field(0, description="metadata.generation the session started under")
    pod: str | None = Field(None, description="the media pod serving it, once created")


class IngressCRStatus(_Model):
    """The status subresource; the operator and the live session's pod each own their fields."""

    ingress_id: str | None = None
    url: str | None = None
    stream_key_secret: str | None = Field(None, description="the Secret holding the stream key")
    reusable: bool | None = None
    state: IngressState | None = None
    session: Session | None = None
    conditions: list[Condition] = Field(default_factory=list)
    observed_generation: int | None = None


class Metadata(BaseModel):
    model_config = ConfigDict(extra="ignore")
    name: str = ""
    namespace: str = ""
    uid: str = ""
    resourceVersion: str = ""
    generation: int = 0
    labels: dict[str, str] = Field(default_factory=dict)
    deletionTimestamp: str | None = None


def seniority(obj: dict[str, Any]) -> tuple[bool, str, str]:
    """Precedence between CRs labelled with one ingress id (a copied manifest): the one already
    holding it in its status, else the older, else the first by name. Smaller wins."""
    meta, status = obj.get("metadata") or {}, obj.get("status") or {}
    holds = status.get("ingressId") == (meta.get("labels") or {}).get(ID_LABEL)
    return not holds, meta.get("creationTimestamp", ""), meta.get("name", "")


class LiveKitIngress(BaseModel):
    """A whole LiveKitIngress object as read from the API server."""

    model_config = ConfigDict(extra="ignore")
    metadata: Metadata
    spec: IngressSpec
    status: IngressCRStatus = Field(default_factory=IngressCRStatus)

    @property
    def ingress_id(self) -> str | None:
        return self.metadata.labels.get(ID_LABEL)


# --- validation ------------------------------------------------------------------------------

# LiveKit's wording (livekit/protocol ingress/validation.go) for a value it does not accept,
# keyed by the field's name, prefixed by the kind of parameter ("video" → "invalid video parameters").
_VALUE_MESSAGES = {
    "preset": "invalid preset",
    "videoCodec": "video codec unsupported",
    "audioCodec": "audio codec unsupported",
    "source": "invalid track source",
    "frameRate": "invalid framerate",
    "channels": "invalid audio channel count",
}
_KIND_PREFIX = {"video": "invalid video parameters: ", "audio": "invalid audio parameters: "}
INVALID_INGRESS = "invalid ingress: "
INVALID_BYPASS = "invalid transcoding bypass configuration: "


def field_path(loc: tuple[int | str, ...]) -> str:
    """`("video", "options", "layers", 0, "width")` → `video.options.layers[0].width`."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _rule_for(error: Any) -> str:
    """LiveKit's message for one pydantic error."""
    loc = tuple(error["loc"])
    names = [p for p in loc if isinstance(p, str)]
    last = names[-1] if names else ""
    if last == "inputType":
        return "invalid ingress type"
    if last == "participantIdentity":
        return INVALID_INGRESS + "no participant identity"
    if last in ("width", "height"):
        if error["input"] == 0:
            return _KIND_PREFIX["video"] + "invalid output media dimensions"
        if error["type"] == "multiple_of":
            return INVALID_INGRESS + f"layer {last} must be even"
    if last in _VALUE_MESSAGES:
        return _KIND_PREFIX.get(str(loc[0]), "") + _VALUE_MESSAGES[last]
    return str(error["msg"])


def _invalid_from(err: ValidationError) -> InvalidArgument:
    first = err.errors()[0]
    return InvalidArgument(_rule_for(first), field_path(tuple(first["loc"])))


def parse_spec(data: dict[str, Any]) -> IngressSpec:
    """Validate a camelCase spec dict, field rules and cross-field rules; InvalidArgument names the field."""
    try:
        spec = IngressSpec.model_validate(data)
    except ValidationError as err:
        raise _invalid_from(err) from None
    check_rules(spec)
    return spec


def check_rules(spec: IngressSpec) -> None:
    """LiveKit's rules across fields, in LiveKit's order; raises InvalidArgument naming the field."""
    if spec.input_type is InputType.URL:
        if not spec.url:
            raise InvalidArgument(INVALID_INGRESS + "missing URL parameter", "url")
        try:
            scheme = urllib.parse.urlsplit(spec.url).scheme.lower()
        except ValueError as err:
            raise InvalidArgument(f"{INVALID_INGRESS}invalid url: {err}", "url") from None
        if scheme not in ("http", "https", "srt"):
            raise InvalidArgument(INVALID_INGRESS + f"invalid url scheme {scheme}", "url")
        if not spec.room_name:
            raise InvalidArgument(INVALID_INGRESS + "no room name", "roomName")
        if spec.enabled is False:
            raise InvalidArgument(INVALID_INGRESS + "disabled non reusable ingress", "enabled")
    if spec.enable_transcoding is False and spec.input_type is not InputType.WHIP:
        raise InvalidArgument(
            INVALID_BYPASS + "bypassing transcoding impossible with selected input type", "enableTranscoding"
        )
    if not spec.transcoding_enabled:
        for kind, opts in (("video", spec.video), ("audio", spec.audio)):
            if opts and (opts.preset is not None or opts.options is not None):
                raise InvalidArgument(
                    INVALID_BYPASS + f"{kind} encoding options must be empty if transcoding is disabled", kind
                )
    for kind, opts in (("video", spec.video), ("audio", spec.audio)):
        if opts and opts.preset is not None and opts.options is not None:
            raise InvalidArgument(_KIND_PREFIX[kind] + "preset and options are exclusive", kind)
    if spec.video and spec.video.options:
        _check_layers(spec.video.options.layers)


def _check_layers(layers: list[VideoLayer]) -> None:
    """One layer per quality; neither side shrinks from LOW to HIGH (equal sides are allowed)."""
    seen: dict[str, int] = {}
    for i, layer in enumerate(layers):
        if layer.quality in seen:
            raise InvalidArgument(
                _KIND_PREFIX["video"] + "more than one layer with the same quality level",
                f"video.options.layers[{i}].quality",
            )
        seen[layer.quality] = i
    width = height = 0
    for quality in ("LOW", "MEDIUM", "HIGH"):
        if quality not in seen:
            continue
        i = seen[quality]
        layer = layers[i]
        for side, value, previous in (("height", layer.height, height), ("width", layer.width, width)):
            if value < previous:
                rule = f"video layers do not have increasing {side} with increasing quality"
                raise InvalidArgument(_KIND_PREFIX["video"] + rule, f"video.options.layers[{i}].{side}")
        width, height = layer.width, layer.height


def normalize_url(url: str) -> str:
    """The source URL as Go's url.String prints it: scheme lower-cased, spaces escaped."""
    parts = urllib.parse.urlsplit(url.strip())
    safe = "/:@!$&'()*+,;=%~-._"
    return urllib.parse.urlunsplit(
        (
            parts.scheme.lower(),
            parts.netloc,
            urllib.parse.quote(parts.path, safe=safe),
            urllib.parse.quote(parts.query, safe=safe + "?"),
            urllib.parse.quote(parts.fragment, safe=safe + "?"),
        )
    )


# --- protobuf <-> CR ---------------------------------------------------------------------------

_REQUEST_FIELDS = (
    "name",
    "roomName",
    "participantIdentity",
    "participantName",
    "participantMetadata",
    "enableTranscoding",
    "enabled",
    "audio",
    "video",
)


def _request_dict(msg: pb.CreateIngressRequest | pb.UpdateIngressRequest) -> dict[str, Any]:
    """A request as a camelCase dict of the fields the caller set (empty strings are unset)."""
    data = json_format.MessageToDict(msg)
    out = {k: v for k, v in data.items() if k in _REQUEST_FIELDS and v != ""}
    for kind in ("audio", "video"):
        if msg.HasField(kind):
            # Printing unpopulated fields keeps zero-valued enums (quality LOW, source UNKNOWN).
            sub = json_format.MessageToDict(getattr(msg, kind), always_print_fields_with_no_presence=True)
            out[kind] = {k: v for k, v in sub.items() if v != ""}
    return out


def spec_from_create(req: pb.CreateIngressRequest) -> IngressSpec:
    """Validate a CreateIngressRequest into the spec stored in the CR."""
    data = _request_dict(req)
    if req.input_type not in pb.IngressInput.values():
        raise InvalidArgument("invalid ingress type", "inputType")
    data["inputType"] = pb.IngressInput.Name(req.input_type).removesuffix("_INPUT")
    data.setdefault("participantIdentity", "")
    if req.input_type == pb.URL_INPUT and req.url:
        try:
            data["url"] = normalize_url(req.url)
        except ValueError as err:
            raise InvalidArgument(f"{INVALID_INGRESS}invalid url: {err}", "url") from None
    return parse_spec(data)


def spec_after_update(spec: IngressSpec, req: pb.UpdateIngressRequest) -> IngressSpec:
    """The spec after an UpdateIngressRequest: set fields replace, unset/empty ones stay."""
    if not spec.reusable:
        raise InvalidArgument("ingress is not reusable and cannot be modified")
    data = spec.to_cr()
    data.update(_request_dict(req))
    return parse_spec(data)


def _nanos(when: datetime | None) -> int:
    if when is None:
        return 0
    return int(when.timestamp()) * 1_000_000_000 + when.microsecond * 1000


def ingress_url(spec: IngressSpec, rtmp_base_url: str, whip_base_url: str) -> str:
    """The url of IngressInfo: the push base for RTMP/WHIP, the (normalized) source for URL."""
    if spec.input_type is InputType.RTMP:
        return rtmp_base_url
    if spec.input_type is InputType.WHIP:
        return whip_base_url
    return spec.url or ""


def ingress_info(
    cr: LiveKitIngress, stream_key: str, rtmp_base_url: str, whip_base_url: str
) -> pb.IngressInfo:
    """IngressInfo as LiveKit returns it, from the CR and its stream key."""
    spec = cr.spec
    info = pb.IngressInfo(
        ingress_id=cr.ingress_id or "",
        name=spec.name or "",
        stream_key=stream_key if spec.input_type is not InputType.URL else "",
        url=ingress_url(spec, rtmp_base_url, whip_base_url),
        input_type=spec.input_type.proto,  # type: ignore[arg-type]
        enable_transcoding=spec.transcoding_enabled,
        bypass_transcoding=not spec.transcoding_enabled,
        room_name=spec.room_name or "",
        participant_identity=spec.participant_identity,
        participant_name=spec.participant_name or "",
        participant_metadata=spec.participant_metadata or "",
        reusable=spec.reusable,
        state=(cr.status.state or IngressState()).to_proto(),
    )
    if spec.enabled is not None:
        info.enabled = spec.enabled
    for kind in ("audio", "video"):
        opts: AudioOptions | VideoOptions | None = getattr(spec, kind)
        if opts is not None:
            json_format.ParseDict(opts.to_cr(), getattr(info, kind))
        elif spec.input_type is InputType.URL:
            getattr(info, kind).SetInParent()
    return info


_SNAKE = re.compile(r"(?<!^)(?=[A-Z])")


def snake_path(path: str) -> str:
    """`video.options.videoCodec` → `video.options.video_codec` (how protobuf callers spell it)."""
    return _SNAKE.sub("_", path).lower()


# --- status patches a session's writers share ---------------------------------------------------


def now() -> datetime:
    return datetime.now(UTC)


def rfc3339(when: datetime) -> str:
    """Kubernetes' own time format: seconds, UTC, `Z`."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    """The condition `type_` of a CR's status as read from the API ({} when there is none)."""
    found: dict[str, Any] = next((c for c in status.get("conditions") or [] if c.get("type") == type_), {})
    return found


def session_guard(resource_id: str | None) -> dict[str, Any]:
    """The JSON-patch operation that makes a status write apply only while this session is
    the CR's: a write meant for an ended session must not touch its successor's."""
    return {"op": "test", "path": "/status/session/resourceId", "value": resource_id}


def session_start_patch(session: Session, guard: dict[str, Any]) -> list[dict[str, Any]]:
    """Start `session`: status.session and state BUFFERING, if `guard` (a JSON-patch test of
    what the writer checked before deciding to start) still holds."""
    when, rid = now(), session.resource_id
    buffering = IngressStatus.ENDPOINT_BUFFERING
    state = IngressState(status=buffering, started_at=when, updated_at=when, resource_id=rid)
    return [
        guard,
        {"op": "add", "path": "/status/session", "value": session.to_cr()},
        {"op": "add", "path": "/status/state", "value": state.to_cr()},
    ]


def session_end_patch(
    resource_id: str | None, to: IngressStatus, error: str | None, write_state: bool
) -> list[dict[str, Any]]:
    """Remove the session; with `write_state`, move the state on to `to` (with `error`), for
    a session whose pod did not write its own final state."""
    ops = [session_guard(resource_id), {"op": "remove", "path": "/status/session"}]
    if write_state:
        when = now().isoformat().replace("+00:00", "Z")  # as the pod writes its times
        ops += [
            {"op": "add", "path": "/status/state/status", "value": to.value},
            {"op": "add", "path": "/status/state/endedAt", "value": when},
            {"op": "add", "path": "/status/state/updatedAt", "value": when},
        ]
        if error is not None:
            ops.append({"op": "add", "path": "/status/state/error", "value": error})
    return ops
