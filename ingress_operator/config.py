"""Settings of the operator and the shim, read from the environment (a ConfigMap/Secret in a cluster)."""

from __future__ import annotations

from typing import Any, Literal

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
    frontdoor_bind: str = Field("127.0.0.1", description="address the front door listens on")
    frontdoor_rtmp_port: int = Field(1935, description="RTMP listener of the front door")
    frontdoor_http_port: int = Field(8080, description="HTTP listener of the front door (sessions, WHIP)")
    frontdoor_whip_udp_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="UDP port relaying WHIP media to media pods (0: none, clients reach pods)",
    )
    frontdoor_whip_udp_advertise: str = Field(
        "",
        pattern=r"^$|^(\[[0-9A-Fa-f:.]+\]|[^:\[\]\s]+):[0-9]{1,5}$",
        description="host:port (or [v6]:port) WHIP clients send media to (default: bind address, port)",
    )
    frontdoor_whip_pod_candidates: bool = Field(
        True, description="keep the media pods' own ICE candidates in WHIP answers beside the relay's"
    )
    frontdoor_source_url: str = Field(
        "", description="how media pods reach this front door's HTTP port (default: bind address)"
    )
    livekit_secret_name: str = Field(
        "livekit-api", description="Secret (keys apiKey, apiSecret) media pods join rooms with"
    )
    media_image: str = Field("ghcr.io/lkop/livekit-ingress-media:0.1.0", description="media pod image")
    media_command: list[str] = Field(["lki-media"], description="media pod command (JSON list)")
    media_env: dict[str, str] = Field(default_factory=dict, description="extra media pod env (JSON)")
    media_service_account: str = Field("lki-media", description="media pods' ServiceAccount")
    media_resources: dict[str, dict[str, str]] = Field(
        # From bench/rtmp.py (docs/benchmarks.md): one 1080p30 → 720p 3-layer session uses
        # 0.57 CPU-s/s and at most 175 MB; no CPU limit, so a session never throttles mid-GOP.
        {"requests": {"cpu": "600m", "memory": "192Mi"}, "limits": {"memory": "512Mi"}},
        description="media pod container resources (JSON)",
    )
    media_image_pull_policy: Literal["", "Always", "IfNotPresent", "Never"] = Field(
        "", description="media pod image pull policy (empty: the cluster's default for the tag)"
    )
    media_image_pull_secrets: list[str] = Field(
        default_factory=list, description="names of Secrets to pull the media image with (JSON)"
    )
    media_node_selector: dict[str, str] = Field(
        default_factory=dict, description="media pods' nodeSelector (JSON)"
    )
    media_tolerations: list[dict[str, Any]] = Field(
        default_factory=list, description="media pods' tolerations (JSON, as in a Pod spec)"
    )
    media_annotations: dict[str, str] = Field(
        default_factory=dict, description="media pods' annotations (JSON)"
    )
    # Pod Security "restricted" by default: in a namespace that enforces it, a pod without
    # these is refused and no session could ever start.
    media_pod_security_context: dict[str, Any] = Field(
        {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
        description="media pods' securityContext (JSON)",
    )
    media_security_context: dict[str, Any] = Field(
        {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
        description="the media container's securityContext (JSON)",
    )
    list_page_size: int = Field(100, ge=1, description="ListIngress page size when a page_token is sent")
    operator_health_port: int = 8081
    operator_metrics_port: int = 8082
    operator_bind: str = "127.0.0.1"

    @property
    def livekit_ws_url(self) -> str:
        """livekit-server's URL for room connections (ws/wss)."""
        return self.livekit_server_url.replace("http://", "ws://", 1).replace("https://", "wss://", 1)
