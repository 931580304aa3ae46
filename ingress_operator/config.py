"""Settings of the operator and the shim, read from the environment (a ConfigMap/Secret in a cluster)."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """One settings object for every control-plane process; unset values take these defaults."""

    model_config = SettingsConfigDict(env_prefix="", extra="ignore")

    ingress_namespace: str = Field("livekit-ingress", description="namespace of the LiveKitIngress objects")
    livekit_api_key: str = Field("", description="API key the shim accepts (required by the shim)")
    livekit_api_secret: SecretStr = Field(SecretStr(""), description="secret of that key")
    livekit_server_url: str = Field(
        "http://127.0.0.1:7880",
        description="livekit-server, for the Twirp services the shim proxies",
    )
    shim_host: str = "127.0.0.1"
    shim_port: int = 7890
    rtmp_base_url: str = Field("rtmp://127.0.0.1:1935/x", description="RTMP push URL given to ingresses")
    whip_base_url: str = Field("http://127.0.0.1:8080/w", description="WHIP endpoint given to ingresses")
    list_page_size: int = Field(100, ge=1, description="ListIngress page size when a page_token is sent")
    operator_health_port: int = 8081
    operator_metrics_port: int = 8082
    operator_bind: str = "127.0.0.1"
