"""The Helm chart (helm/livekit-ingress) as `helm` renders it, without a cluster: it lints clean,
its schema refuses bad values naming the field, what it renders with default and with every
option changed is what the operator, the shim and the front door need, and the media pod
options travel from values through the operator's environment into the pods it makes.

tests/e2e/test_helm.py installs it into the local stack and validates the same renderings
against the API server.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from ingress_operator import crd, sessions
from ingress_operator.config import Settings
from ingress_operator.models import Session
from local_stack import tools

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "livekit-ingress"
KIND_VALUES = CHART / "ci" / "kind-values.yaml"
RELEASE, NAMESPACE = "lki", "media-live"
PREFIX = "lki-livekit-ingress"
Doc = dict[str, Any]

# Every option away from its default: what a production install might set.
FULL_VALUES: Doc = {
    "image": {"repository": "registry.example/lki/control-plane", "tag": "1.2.3", "pullPolicy": "Always"},
    "mediaImage": {"repository": "registry.example/lki/media", "tag": "1.2.4", "pullPolicy": "Always"},
    "imagePullSecrets": ["registry"],
    "livekit": {"url": "https://livekit.example:7880", "existingSecret": "lk-keys"},
    "publicUrls": {"rtmp": "rtmps://ingest.example:443/x", "whip": "https://ingest.example/w"},
    "listenAddress": "$(POD_IP)",
    "operator": {
        "healthPort": 9081,
        "metricsPort": 9082,
        "resources": {"requests": {"cpu": "100m", "memory": "160Mi"}, "limits": {"memory": "300Mi"}},
        "podAnnotations": {"example.com/team": "video"},
        "nodeSelector": {"pool": "system"},
        "tolerations": [{"key": "system", "operator": "Exists", "effect": "NoSchedule"}],
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {
                            "matchExpressions": [
                                {"key": "kubernetes.io/os", "operator": "In", "values": ["linux"]}
                            ]
                        }
                    ]
                }
            }
        },
        "priorityClassName": "livekit-ingress",
    },
    "shim": {
        "replicas": 3,
        "service": {
            "type": "LoadBalancer",
            "port": 443,
            "nodePort": 30790,
            "annotations": {"example.com/lb": "internal"},
        },
        "podDisruptionBudget": {"enabled": True, "maxUnavailable": "50%"},
    },
    "frontdoor": {
        "ports": {"rtmp": 1936, "http": 8081},
        "service": {
            "type": "NodePort",
            "nodePorts": {"rtmp": 31935, "http": 30080, "whipUdp": 30885},
            "externalTrafficPolicy": "Local",
            "annotations": {"example.com/lb": "public"},
        },
        "whip": {"udpPort": 7886, "advertise": "203.0.113.7:7886", "podCandidates": True},
        "podDisruptionBudget": {"enabled": True},
    },
    "media": {
        "resources": {"requests": {"cpu": 1, "memory": "256Mi"}, "limits": {"memory": "1Gi"}},
        "nodeSelector": {"pool": "media"},
        "tolerations": [{"key": "media", "operator": "Equal", "value": "true", "effect": "NoSchedule"}],
        "annotations": {"sidecar.istio.io/inject": "false"},
        "env": {"READ_TIMEOUT": 20, "LOG_LEVEL": "DEBUG"},
    },
    "metrics": {
        "serviceMonitor": {"enabled": True, "interval": "15s", "labels": {"release": "prometheus"}},
        "podMonitor": {"enabled": True, "interval": "10s", "labels": {"release": "prometheus"}},
    },
    "grafana": {
        "dashboard": {
            "enabled": True,
            "namespace": "monitoring",
            "labels": {"team": "video"},
            "annotations": {"grafana_folder": "LiveKit"},
        }
    },
}


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [str(tools.find_tool("helm")), *args], capture_output=True, text=True, timeout=60, check=False
    )
    if check and proc.returncode:
        raise AssertionError(f"helm {' '.join(args)} failed: {proc.stderr}")
    return proc


def template(
    values: Doc | None = None, *extra: str, namespace: str = NAMESPACE
) -> subprocess.CompletedProcess[str]:
    """`helm template` of the chart with these values (a values file, as a user passes them)."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        yaml.safe_dump(values or {}, f)
        f.flush()
        return helm("template", RELEASE, str(CHART), "-n", namespace, "-f", f.name, *extra, check=False)


def render(values: Doc | None = None, namespace: str = NAMESPACE) -> list[Doc]:
    """The objects the chart renders (CRDs excluded, as `helm template` does)."""
    proc = template(values, namespace=namespace)
    assert proc.returncode == 0, proc.stderr
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


def index(docs: list[Doc]) -> dict[tuple[str, str], Doc]:
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def deployment_container(docs: list[Doc], component: str) -> Doc:
    deployment = index(docs)["Deployment", f"{PREFIX}-{component}"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(container)


def plain_env(container: Doc) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def operator_settings(docs: list[Doc], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The operator's Settings as its container's environment makes them."""
    for name, value in plain_env(deployment_container(docs, "operator")).items():
        monkeypatch.setenv(name, value)
    return Settings()


def a_media_pod(settings: Settings) -> Doc:
    """The media pod the operator would make for a session, with these settings."""
    body = {"metadata": {"name": "cam", "uid": "u-1", "labels": {"ingress.lkop.dev/id": "IN_x"}}}
    session = Session(resource_id="RT_abc", source="http://10.0.0.9:8080/sessions/RT_abc", generation=1)
    return sessions.media_pod(body, session, "cam-rt-abc", settings)


def test_the_chart_lints_clean_with_default_kind_and_full_values() -> None:
    helm("lint", "--strict", str(CHART))
    helm("lint", "--strict", str(CHART), "-f", str(KIND_VALUES))
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as f:
        yaml.safe_dump(FULL_VALUES, f)
        f.flush()
        helm("lint", "--strict", str(CHART), "-f", f.name)


def test_the_charts_crd_is_the_generated_one() -> None:
    assert (CHART / "crds" / "livekitingresses.yaml").read_text() == crd.render(), (
        "run: python -m ingress_operator.crd | tee crds/livekitingresses.yaml"
        " > helm/livekit-ingress/crds/livekitingresses.yaml"
    )


def test_default_values_render_the_control_plane_and_least_privilege_rbac() -> None:
    objects = index(render())
    components = ("operator", "shim", "frontdoor", "media")
    expected = {("Deployment", f"{PREFIX}-{c}") for c in components[:3]}
    expected |= {("Service", f"{PREFIX}-shim"), ("Service", f"{PREFIX}-frontdoor")}
    expected |= {
        (kind, f"{PREFIX}-{c}") for c in components for kind in ("ServiceAccount", "Role", "RoleBinding")
    }
    expected |= {("PodDisruptionBudget", f"{PREFIX}-shim")}
    assert set(objects) == expected
    for doc in objects.values():
        # Namespaced objects only: no access beyond the release's namespace.
        assert doc["metadata"]["labels"]["app.kubernetes.io/instance"] == RELEASE
        assert doc["metadata"]["namespace"] == NAMESPACE
        for rule in doc.get("rules", []):
            assert "*" not in rule["verbs"] + rule["resources"] + rule["apiGroups"], rule
    media_rules = objects["Role", f"{PREFIX}-media"]["rules"]
    assert {v for r in media_rules for v in r["verbs"]} == {"get", "patch"}
    # WHIP media through the front door's UDP port, offered at the WHIP URL's host by default.
    frontdoor = objects["Service", f"{PREFIX}-frontdoor"]["spec"]
    assert ("whip-udp", 7885, "UDP") in {
        (p["name"], p["port"], p.get("protocol", "TCP")) for p in frontdoor["ports"]
    }
    env = {
        e["name"]: e.get("value")
        for e in objects["Deployment", f"{PREFIX}-frontdoor"]["spec"]["template"]["spec"]["containers"][0][
            "env"
        ]
    }
    assert (
        env["FRONTDOOR_WHIP_UDP_ADVERTISE"] == "localhost:7885"
        and env["FRONTDOOR_WHIP_POD_CANDIDATES"] == "false"
    )


@pytest.mark.parametrize("values", [None, FULL_VALUES], ids=["default", "full"])
def test_each_component_runs_its_entrypoint_and_probes_ports_it_opens(values: Doc | None) -> None:
    docs = render(values)
    for component, command in [
        ("operator", "lki-operator"),
        ("shim", "lki-shim"),
        ("frontdoor", "lki-frontdoor"),
    ]:
        container = deployment_container(docs, component)
        # The process node runs `command` (it ignores images); the images' entrypoints agree.
        assert container["command"] == [command]
        ports = {p["name"] for p in container["ports"]}
        for probe in ("readinessProbe", "livenessProbe"):
            assert container[probe]["httpGet"]["port"] in ports
        env = [e["name"] for e in container["env"]]
        assert env[0] == "POD_IP", "first, so that listenAddress may be $(POD_IP)"
    for component in ("operator", "frontdoor"):
        deployment = index(docs)["Deployment", f"{PREFIX}-{component}"]
        # Never two at once: kopf runs without peering; the front door's sessions are in memory.
        assert deployment["spec"]["replicas"] == 1
        assert deployment["spec"]["strategy"] == {"type": "Recreate"}


def test_the_default_media_resources_are_the_operators_measured_ones(monkeypatch: pytest.MonkeyPatch) -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    measured = Settings.model_fields["media_resources"].default
    assert values["media"]["resources"] == measured
    settings = operator_settings(render(), monkeypatch)
    assert settings.media_resources == measured
    pod = a_media_pod(settings)
    assert pod["spec"]["containers"][0]["resources"] == {
        "requests": {"cpu": "600m", "memory": "192Mi"},
        "limits": {"memory": "512Mi"},
    }
    assert not {"nodeSelector", "tolerations", "imagePullSecrets"} & set(pod["spec"])


def test_media_pod_values_reach_the_pods_the_operator_makes(monkeypatch: pytest.MonkeyPatch) -> None:
    docs = render(FULL_VALUES)
    settings = operator_settings(docs, monkeypatch)
    pod = a_media_pod(settings)
    spec, (container,) = pod["spec"], pod["spec"]["containers"]
    media = FULL_VALUES["media"]
    assert spec["nodeSelector"] == media["nodeSelector"]
    assert spec["tolerations"] == media["tolerations"]
    assert spec["imagePullSecrets"] == [{"name": "registry"}]
    assert pod["metadata"]["annotations"] == media["annotations"]
    assert container["image"] == "registry.example/lki/media:1.2.4"
    assert container["imagePullPolicy"] == "Always"
    # Quantities and env values become strings, whatever YAML made of them.
    assert container["resources"] == {
        "requests": {"cpu": "1", "memory": "256Mi"},
        "limits": {"memory": "1Gi"},
    }
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    assert env["READ_TIMEOUT"] == "20" and env["LOG_LEVEL"] == "DEBUG"
    assert env["LIVEKIT_URL"] == "wss://livekit.example:7880"
    assert env["LIVEKIT_API_KEY"] == {"secretKeyRef": {"name": "lk-keys", "key": "apiKey"}}
    # The ServiceAccount the pods run as is the chart's, bound to the media Role.
    binding = index(docs)["RoleBinding", spec["serviceAccountName"]]
    assert binding["subjects"][0]["name"] == spec["serviceAccountName"] == f"{PREFIX}-media"


def test_full_values_expose_and_monitor_what_they_say() -> None:
    docs = render(FULL_VALUES)
    objects = index(docs)
    frontdoor = objects["Service", f"{PREFIX}-frontdoor"]["spec"]
    assert {
        (p["name"], p["port"], p.get("nodePort"), p.get("protocol", "TCP")) for p in frontdoor["ports"]
    } == {
        ("rtmp", 1936, 31935, "TCP"),
        ("http", 8081, 30080, "TCP"),
        ("whip-udp", 7886, 30885, "UDP"),
    }
    assert frontdoor["externalTrafficPolicy"] == "Local"
    env = plain_env(deployment_container(docs, "frontdoor"))
    assert env["FRONTDOOR_SOURCE_URL"] == "http://$(POD_IP):8081"
    assert env["FRONTDOOR_BIND"] == "$(POD_IP)" and env["RTMP_BASE_URL"] == "rtmps://ingest.example:443/x"
    assert env["FRONTDOOR_WHIP_UDP_PORT"] == "7886" and env["FRONTDOOR_WHIP_POD_CANDIDATES"] == "true"
    assert env["FRONTDOOR_WHIP_UDP_ADVERTISE"] == "203.0.113.7:7886"
    shim = objects["Service", f"{PREFIX}-shim"]["spec"]
    assert shim["type"] == "LoadBalancer" and shim["ports"][0]["nodePort"] == 30790
    assert objects["PodDisruptionBudget", f"{PREFIX}-frontdoor"]["spec"]["maxUnavailable"] == 0
    assert objects["PodDisruptionBudget", f"{PREFIX}-shim"]["spec"]["maxUnavailable"] == "50%"

    # The ServiceMonitor scrapes every control-plane Service on a port that Service has.
    monitor = objects["ServiceMonitor", PREFIX]["spec"]
    selected = [
        d
        for d in docs
        if d["kind"] == "Service"
        and monitor["selector"]["matchLabels"].items() <= d["metadata"]["labels"].items()
        and d["metadata"]["labels"]["app.kubernetes.io/component"]
        in monitor["selector"]["matchExpressions"][0]["values"]
    ]
    assert {d["metadata"]["labels"]["app.kubernetes.io/component"] for d in selected} == {
        "operator",
        "shim",
        "frontdoor",
    }
    for service in selected:
        assert {e["port"] for e in monitor["endpoints"]} & {p["name"] for p in service["spec"]["ports"]}
    # The PodMonitor finds the media pods and their metrics port.
    pod_monitor = objects["PodMonitor", f"{PREFIX}-media"]["spec"]
    pod = a_media_pod(Settings())
    assert pod_monitor["selector"]["matchLabels"].items() <= pod["metadata"]["labels"].items()
    assert pod_monitor["podMetricsEndpoints"][0]["port"] in {
        p["name"] for p in pod["spec"]["containers"][0]["ports"]
    }

    dashboard = objects["ConfigMap", f"{PREFIX}-dashboard"]
    assert dashboard["metadata"]["namespace"] == "monitoring"
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["livekit-ingress.json"]) == json.loads(
        (CHART / "dashboards" / "livekit-ingress.json").read_text()
    )


BAD_VALUES = [
    ({"operator": {"replicas": 2}}, "at '/operator'", "replicas"),
    ({"shim": {"replicas": 0}}, "at '/shim/replicas'", "minimum"),
    ({"media": {"resources": {"requests": {"cpu": "lots"}}}}, "at '/media/resources/requests/cpu'", "lots"),
    ({"media": {"resources": {"claims": [{"name": "gpu"}]}}}, "at '/media/resources'", "claims"),
    ({"media": {"env": {"BAD-NAME": "x"}}}, "at '/media/env'", "BAD-NAME"),
    ({"media": {"tolerations": [{"key": "a", "operatr": "Exists"}]}}, "at '/media/tolerations/0'", "operatr"),
    ({"livekit": {"url": "livekit.example:7880"}}, "at '/livekit/url'", "does not match"),
    ({"publicUrls": {"rtmp": "http://ingest.example/x"}}, "at '/publicUrls/rtmp'", "does not match"),
    ({"frontdoor": {"service": {"type": "Ingress"}}}, "at '/frontdoor/service/type'", "must be one of"),
    ({"mediaImage": {"pullPolicy": "Sometimes"}}, "at '/mediaImage/pullPolicy'", "must be one of"),
    ({"metrics": {"serviceMonitor": {"interval": "soon"}}}, "at '/metrics/serviceMonitor/interval'", "soon"),
    ({"imagePullSecrets": [{"name": "registry"}]}, "at '/imagePullSecrets/0'", "want string"),
    (
        {"frontdoor": {"whip": {"advertise": "203.0.113.7"}}},
        "at '/frontdoor/whip/advertise'",
        "does not match",
    ),
]


@pytest.mark.parametrize(("values", "where", "what"), BAD_VALUES, ids=[b[1] for b in BAD_VALUES])
def test_the_schema_refuses_bad_values_naming_the_field(values: Doc, where: str, what: str) -> None:
    proc = template(values)
    assert proc.returncode != 0
    assert where in proc.stderr and what in proc.stderr, proc.stderr


def test_kind_values_match_the_ports_kind_config_maps() -> None:
    """docs/kubernetes.md's walkthrough can't run here: at least its two files agree."""
    kind = yaml.safe_load((ROOT / "kind-config.yaml").read_text())
    (node,) = kind["nodes"]
    mapped = {m["containerPort"]: m["hostPort"] for m in node["extraPortMappings"]}
    values = yaml.safe_load(KIND_VALUES.read_text())
    node_ports = values["frontdoor"]["service"]["nodePorts"]
    assert mapped[node_ports["rtmp"]] == urlsplit(values["publicUrls"]["rtmp"]).port == 1935
    assert mapped[node_ports["http"]] == urlsplit(values["publicUrls"]["whip"]).port
    assert values["shim"]["service"]["nodePort"] in mapped
    # WHIP media: the relay's node port is where the answers' candidate sends clients.
    host, port = values["frontdoor"]["whip"]["advertise"].split(":")
    assert mapped[node_ports["whipUdp"]] == int(port) and host == "127.0.0.1"
    protocols = {m["containerPort"]: m["protocol"] for m in node["extraPortMappings"]}
    assert protocols[node_ports["whipUdp"]] == "UDP"
    shim = values["shim"]["service"]["nodePort"]
    assert set(mapped) == {node_ports["rtmp"], node_ports["http"], node_ports["whipUdp"], shim}


def test_the_front_doors_service_ports_can_differ_from_its_container_ports() -> None:
    """rtmps:// on 443 at a TLS-terminating load balancer reaches the front door's 1935."""
    default = index(render())["Service", f"{PREFIX}-frontdoor"]["spec"]["ports"]
    assert {(p["port"], p["targetPort"]) for p in default} == {
        (1935, "rtmp"),
        (8080, "http"),
        (7885, "whip-udp"),
    }
    values = {"frontdoor": {"service": {"type": "LoadBalancer", "ports": {"rtmp": 443}}}}
    ports = index(render(values))["Service", f"{PREFIX}-frontdoor"]["spec"]["ports"]
    assert {(p["port"], p["targetPort"]) for p in ports} == {
        (443, "rtmp"),
        (8080, "http"),
        (7885, "whip-udp"),
    }
