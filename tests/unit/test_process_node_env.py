"""Environment resolution of the process node (pure functions), table-driven."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from local_stack.node.envvars import (
    EnvError,
    EnvSources,
    PodNetwork,
    command_line,
    expand,
    field_ref,
    parse_quantity,
    referenced_objects,
    resolve_env,
)

NET = PodNetwork(
    pod_ip="127.0.16.7",
    host_ip="127.0.0.1",
    node_name="process-node",
    node_allocatable={"cpu": "2", "memory": "4Gi"},
)

POD: dict[str, Any] = {
    "metadata": {
        "name": "web-1",
        "namespace": "media",
        "uid": "u-1",
        "labels": {"app": "web", "tier": "front"},
        "annotations": {"note": "hi"},
    },
    "spec": {"nodeName": "process-node", "serviceAccountName": "runner"},
}


@pytest.mark.parametrize(
    ("value", "env", "expected"),
    [
        ("plain", {}, "plain"),
        ("$(A)", {"A": "1"}, "1"),
        ("x-$(A)-$(B)", {"A": "1", "B": "2"}, "x-1-2"),
        ("$(MISSING)", {}, "$(MISSING)"),
        ("$$(A)", {"A": "1"}, "$(A)"),
        ("$$", {}, "$"),
        ("$(A", {"A": "1"}, "$(A"),
        ("a$b", {}, "a$b"),
        ("end$", {}, "end$"),
        ("$()", {}, "$()"),
    ],
)
def test_expand(value: str, env: dict[str, str], expected: str) -> None:
    assert expand(value, env) == expected


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("metadata.name", "web-1"),
        ("metadata.namespace", "media"),
        ("metadata.uid", "u-1"),
        ("metadata.labels['app']", "web"),
        ("metadata.labels['absent']", ""),
        ("metadata.annotations['note']", "hi"),
        ("metadata.labels", 'app="web"\ntier="front"'),
        ("spec.nodeName", "process-node"),
        ("spec.serviceAccountName", "runner"),
        ("status.podIP", "127.0.16.7"),
        ("status.podIPs", "127.0.16.7"),
        ("status.hostIP", "127.0.0.1"),
    ],
)
def test_field_ref(path: str, expected: str) -> None:
    assert field_ref(POD, path, NET) == expected


def test_field_ref_unknown_path_is_an_error() -> None:
    with pytest.raises(EnvError):
        field_ref(POD, "spec.bogus", NET)


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [
        ("1", Decimal(1)),
        ("500m", Decimal("0.5")),
        ("1Ki", Decimal(1024)),
        ("2Gi", Decimal(2 * 2**30)),
        ("1e3", Decimal(1000)),
        ("1M", Decimal(10**6)),
    ],
)
def test_parse_quantity(quantity: str, expected: Decimal) -> None:
    assert parse_quantity(quantity) == expected


SOURCES = EnvSources(
    secrets={"creds": {"user": "alice", "pass": "s3cret"}},
    config_maps={"settings": {"color": "blue", "bad-name!": "x", "size": "L"}},
)


def _container(**kw: Any) -> dict[str, Any]:
    return {"name": "c", "command": ["run"], **kw}


@pytest.mark.parametrize(
    ("container", "expected"),
    [
        (_container(env=[{"name": "A", "value": "1"}]), {"A": "1"}),
        (
            _container(env=[{"name": "A", "value": "1"}, {"name": "B", "value": "$(A)-2"}]),
            {"A": "1", "B": "1-2"},
        ),
        (
            _container(env=[{"name": "B", "value": "$(A)"}, {"name": "A", "value": "1"}]),
            {"A": "1", "B": "$(A)"},
        ),
        (
            _container(env=[{"name": "U", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "user"}}}]),
            {"U": "alice"},
        ),
        (
            _container(
                env=[{"name": "C", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "color"}}}]
            ),
            {"C": "blue"},
        ),
        (
            _container(env=[{"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}]),
            {"IP": "127.0.16.7"},
        ),
        (
            _container(
                env=[
                    {
                        "name": "X",
                        "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k", "optional": True}},
                    }
                ]
            ),
            {},
        ),
        (
            _container(
                env=[
                    {
                        "name": "X",
                        "valueFrom": {"secretKeyRef": {"name": "creds", "key": "nokey", "optional": True}},
                    }
                ]
            ),
            {},
        ),
        (_container(envFrom=[{"configMapRef": {"name": "settings"}}]), {"color": "blue", "size": "L"}),
        (
            _container(envFrom=[{"secretRef": {"name": "creds"}, "prefix": "DB_"}]),
            {"DB_user": "alice", "DB_pass": "s3cret"},
        ),
        (
            _container(
                envFrom=[{"configMapRef": {"name": "settings"}}], env=[{"name": "color", "value": "red"}]
            ),
            {"color": "red", "size": "L"},
        ),
        (_container(envFrom=[{"configMapRef": {"name": "nope", "optional": True}}]), {}),
        (
            _container(env=[{"name": "CPU", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}}]),
            {"CPU": "2"},
        ),
        (
            _container(
                resources={"requests": {"memory": "64Mi"}},
                env=[
                    {
                        "name": "MEM",
                        "valueFrom": {"resourceFieldRef": {"resource": "requests.memory", "divisor": "1Mi"}},
                    }
                ],
            ),
            {"MEM": "64"},
        ),
    ],
)
def test_resolve_env(container: dict[str, Any], expected: dict[str, str]) -> None:
    assert resolve_env(POD, container, SOURCES, NET).env == expected


def test_resolve_env_overlays_base_and_reports_invalid_names() -> None:
    c = _container(
        envFrom=[{"configMapRef": {"name": "settings"}}], env=[{"name": "PATH", "value": "/opt:$(PATH)"}]
    )
    r = resolve_env(POD, c, SOURCES, NET, base={"PATH": "/bin", "HOME": "/root"})
    assert r.env["PATH"] == "/opt:/bin" and r.env["HOME"] == "/root"
    assert r.skipped == ["bad-name!"]


@pytest.mark.parametrize(
    ("container", "message"),
    [
        (
            _container(env=[{"name": "X", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k"}}}]),
            'secret "nope" not found',
        ),
        (
            _container(env=[{"name": "X", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "k"}}}]),
            "couldn't find key k",
        ),
        (_container(envFrom=[{"configMapRef": {"name": "nope"}}]), 'configmap "nope" not found'),
    ],
)
def test_resolve_env_missing_sources(container: dict[str, Any], message: str) -> None:
    with pytest.raises(EnvError, match=message) as info:
        resolve_env(POD, container, SOURCES, NET)
    assert info.value.reason == "CreateContainerConfigError"


def test_referenced_objects() -> None:
    c = _container(
        envFrom=[{"secretRef": {"name": "s1"}}, {"configMapRef": {"name": "c1"}}],
        env=[
            {"name": "A", "valueFrom": {"secretKeyRef": {"name": "s2", "key": "k"}}},
            {"name": "B", "valueFrom": {"configMapKeyRef": {"name": "c2", "key": "k"}}},
            {"name": "C", "value": "x"},
        ],
    )
    assert referenced_objects(c) == ({"s1", "s2"}, {"c1", "c2"})


@pytest.mark.parametrize(
    ("container", "env", "argv"),
    [
        ({"command": ["sh", "-c", "echo $(A)"]}, {"A": "1"}, ["sh", "-c", "echo 1"]),
        (
            {"command": ["srv"], "args": ["--ip=$(POD_IP)", "$$(KEEP)"]},
            {"POD_IP": "127.0.16.1"},
            ["srv", "--ip=127.0.16.1", "$(KEEP)"],
        ),
    ],
)
def test_command_line(container: dict[str, Any], env: dict[str, str], argv: list[str]) -> None:
    assert command_line(container, env) == argv


def test_command_line_without_command_is_a_create_error() -> None:
    with pytest.raises(EnvError) as info:
        command_line({"args": ["x"]}, {})
    assert info.value.reason == "CreateContainerError"
