"""A container's environment, resolved from its Pod spec as the kubelet does (pure functions).

Order (as the kubelet): `envFrom` sources in order (with `prefix`), then `env` entries, each
value expanded with `$(VAR)` against what is defined so far. Names that are not valid
environment variable names are skipped (the kubelet records an event; we return them).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

Pod = Mapping[str, Any]
Container = Mapping[str, Any]

_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_LABEL_PATH = re.compile(r"^metadata\.(labels|annotations)\['(.*)'\]$")


class EnvError(Exception):
    """The container cannot start (yet): the kubelet's CreateContainerConfigError and kin."""

    def __init__(self, message: str, reason: str = "CreateContainerConfigError") -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class EnvSources:
    """Secrets and ConfigMaps of the pod's namespace, by name, data already decoded to str.

    An object absent from the mapping does not exist.
    """

    secrets: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    config_maps: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


@dataclass(frozen=True)
class PodNetwork:
    pod_ip: str
    host_ip: str
    node_name: str
    node_allocatable: Mapping[str, str] = field(default_factory=dict)


@dataclass
class ResolvedEnv:
    env: dict[str, str]
    skipped: list[str]


def expand(value: str, env: Mapping[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion: `$(NAME)` → value if defined, else left as is; `$$` → `$`."""
    out: list[str] = []
    i, n = 0, len(value)
    while i < n:
        ch = value[i]
        if ch != "$" or i + 1 >= n:
            out.append(ch)
            i += 1
            continue
        nxt = value[i + 1]
        if nxt == "$":
            out.append("$")
            i += 2
        elif nxt == "(":
            close = value.find(")", i + 2)
            if close == -1:
                out.append(value[i:])
                break
            name = value[i + 2 : close]
            if name and name in env:
                out.append(env[name])
            else:
                out.append(value[i : close + 1])
            i = close + 1
        else:
            out.append("$" + nxt)
            i += 2
    return "".join(out)


def referenced_objects(container: Container) -> tuple[set[str], set[str]]:
    """Names of the (Secrets, ConfigMaps) the container's env refers to."""
    secrets: set[str] = set()
    config_maps: set[str] = set()
    for src in container.get("envFrom") or []:
        if src.get("secretRef"):
            secrets.add(src["secretRef"]["name"])
        if src.get("configMapRef"):
            config_maps.add(src["configMapRef"]["name"])
    for var in container.get("env") or []:
        vf = var.get("valueFrom") or {}
        if vf.get("secretKeyRef"):
            secrets.add(vf["secretKeyRef"]["name"])
        if vf.get("configMapKeyRef"):
            config_maps.add(vf["configMapKeyRef"]["name"])
    return secrets, config_maps


def field_ref(pod: Pod, path: str, net: PodNetwork) -> str:
    """The value of a `fieldRef.fieldPath` (the paths the downward API allows in env)."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    m = _LABEL_PATH.match(path)
    if m:
        return str((meta.get(m.group(1)) or {}).get(m.group(2), ""))
    simple: dict[str, Any] = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName") or net.node_name,
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.podIP": net.pod_ip,
        "status.podIPs": net.pod_ip,
        "status.hostIP": net.host_ip,
        "status.hostIPs": net.host_ip,
    }
    if path in ("metadata.labels", "metadata.annotations"):
        items = meta.get(path.split(".")[1]) or {}
        return "\n".join(f'{k}="{v}"' for k, v in sorted(items.items()))
    if path not in simple:
        raise EnvError(f"unsupported fieldPath {path!r}")
    return str(simple[path])


_SUFFIX = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "P": Decimal(10**15),
    "E": Decimal(10**18),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}
_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]?)$")


def parse_quantity(q: str | int | float) -> Decimal:
    """A Kubernetes resource.Quantity ("500m", "1Gi", "2") as a Decimal."""
    m = _QUANTITY.match(str(q).strip())
    if not m:
        raise ValueError(f"invalid quantity {q!r}")
    try:
        number = Decimal(m.group(1))
    except InvalidOperation as exc:
        raise ValueError(f"invalid quantity {q!r}") from exc
    return number * _SUFFIX[m.group(2)]


def resource_field_ref(container: Container, ref: Mapping[str, Any], net: PodNetwork) -> str:
    """`resourceFieldRef`: limits fall back to the node's allocatable; rounded up as the kubelet."""
    resource = str(ref["resource"])
    kind, _, name = resource.partition(".")
    resources = container.get("resources") or {}
    value = (resources.get(kind) or {}).get(name)
    if value is None and kind == "limits":
        value = net.node_allocatable.get(name)
    if value is None:
        value = "0"
    divisor = parse_quantity(ref.get("divisor") or "1")
    if divisor == 0:
        raise EnvError(f"resourceFieldRef {resource}: divisor is zero")
    return str(math.ceil(parse_quantity(value) / divisor))


def resolve_env(
    pod: Pod,
    container: Container,
    sources: EnvSources,
    net: PodNetwork,
    base: Mapping[str, str] | None = None,
) -> ResolvedEnv:
    """The container's environment: `base` (image and node defaults) overlaid with its spec.

    Raises EnvError when a non-optional Secret, ConfigMap or key is missing.
    """
    env: dict[str, str] = dict(base or {})
    declared: dict[str, str] = {}
    skipped: list[str] = []

    for src in container.get("envFrom") or []:
        prefix = src.get("prefix") or ""
        for kind, objects in (("secretRef", sources.secrets), ("configMapRef", sources.config_maps)):
            ref = src.get(kind)
            if not ref:
                continue
            data = objects.get(ref["name"])
            if data is None:
                if ref.get("optional"):
                    continue
                what = "secret" if kind == "secretRef" else "configmap"
                raise EnvError(f'{what} "{ref["name"]}" not found')
            for key, value in data.items():
                name = prefix + key
                if _ENV_NAME.match(name):
                    declared[name] = value
                else:
                    skipped.append(name)

    for var in container.get("env") or []:
        name = var["name"]
        if var.get("valueFrom"):
            found = _value_from(pod, container, var["valueFrom"], sources, net)
            if found is None:
                continue
            declared[name] = found
        else:
            declared[name] = expand(str(var.get("value") or ""), {**env, **declared})

    env.update(declared)
    return ResolvedEnv(env=env, skipped=skipped)


def _value_from(
    pod: Pod,
    container: Container,
    vf: Mapping[str, Any],
    sources: EnvSources,
    net: PodNetwork,
) -> str | None:
    if vf.get("fieldRef"):
        return field_ref(pod, vf["fieldRef"]["fieldPath"], net)
    if vf.get("resourceFieldRef"):
        return resource_field_ref(container, vf["resourceFieldRef"], net)
    for kind, objects, what in (
        ("secretKeyRef", sources.secrets, "secret"),
        ("configMapKeyRef", sources.config_maps, "configmap"),
    ):
        ref = vf.get(kind)
        if not ref:
            continue
        data = objects.get(ref["name"])
        if data is None:
            if ref.get("optional"):
                return None
            raise EnvError(f'{what} "{ref["name"]}" not found')
        if ref["key"] not in data:
            if ref.get("optional"):
                return None
            raise EnvError(f"couldn't find key {ref['key']} in {what} {ref['name']}")
        return data[ref["key"]]
    raise EnvError(f"unsupported valueFrom {sorted(vf)}")


def command_line(container: Container, env: Mapping[str, str]) -> list[str]:
    """command + args with `$(VAR)` expanded; the image's entrypoint is not known here."""
    command = [expand(str(c), env) for c in container.get("command") or []]
    args = [expand(str(a), env) for a in container.get("args") or []]
    if not command:
        raise EnvError(
            "the process node runs a container's `command` (images are not pulled or run); "
            "this container has none",
            reason="CreateContainerError",
        )
    return command + args
