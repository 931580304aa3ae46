"""Settings of the media pod, read from the environment the operator gives its Pod."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class MediaSettings(BaseSettings):
    """One live session: which CR and session it serves, where its input is, where to publish."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore")

    ingress_namespace: str = Field(description="namespace of the LiveKitIngress")
    ingress_name: str = Field(min_length=1, description="name of the LiveKitIngress CR")
    resource_id: str = Field(min_length=1, description="the session's id (RT_/WH_/UR_...)")
    source_url: str = Field(min_length=1, description="where to read the input (front door URL or user URL)")
    input_format: str | None = Field(
        None, description="FFmpeg demuxer to use; unset means flv for RTMP input, probing for others"
    )
    livekit_url: str = Field(description="ws:// or wss:// URL of livekit-server")
    livekit_api_key: str = Field(min_length=1)
    livekit_api_secret: SecretStr
    media_port: int = Field(8090, description="port of /healthz and /metrics")
    pod_ip: str = Field("127.0.0.1", description="address /healthz and /metrics bind to")
    open_timeout: float = Field(10.0, gt=0, description="seconds to wait for the input's first streams")
    read_timeout: float = Field(10.0, gt=0, description="seconds without input data before giving up")
    log_level: str = "INFO"
