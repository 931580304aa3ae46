"""The LiveKitIngress CustomResourceDefinition, generated from the pydantic models.

`python -m ingress_operator.crd > crds/livekitingresses.yaml` writes the checked-in file; a
test proves the two are equal. Field rules come from the models; the rules across fields,
which a JSON schema can't say, are CEL rules listed here beside their LiveKit counterparts
in `models.check_rules`.
"""

from __future__ import annotations

import copy
import sys
from typing import Any

import yaml

from ingress_operator.models import GROUP, KIND, PLURAL, VERSION, IngressCRStatus, IngressSpec

Schema = dict[str, Any]

_TRANSCODING_OFF = "self.inputType == 'WHIP' && (!has(self.enableTranscoding) || !self.enableTranscoding)"
_NO_ENCODING = "(!has(self.{k}) || (!has(self.{k}.preset) && !has(self.{k}.options)))"

SPEC_RULES: list[dict[str, str]] = [
    {
        "rule": "self.inputType != 'URL' || (has(self.url) && size(self.url) > 0)",
        "message": "url is required for URL input",
        "fieldPath": ".url",
    },
    {
        "rule": "self.inputType != 'URL' || !has(self.url) || self.url.matches('^(?i)(https?|srt)://')",
        "message": "url must be an http, https or srt URL",
        "fieldPath": ".url",
    },
    {
        "rule": "self.inputType != 'URL' || (has(self.roomName) && size(self.roomName) > 0)",
        "message": "roomName is required for URL input",
        "fieldPath": ".roomName",
    },
    {
        "rule": "self.inputType != 'URL' || !has(self.enabled) || self.enabled",
        "message": "a URL ingress is not reusable and can't be disabled",
        "fieldPath": ".enabled",
    },
    {
        # A transition rule (only checked on update): UpdateIngress refuses the same.
        "rule": "oldSelf.inputType != 'URL' || self == oldSelf",
        "message": "a URL ingress is not reusable and can't be modified: delete it and create a new one",
    },
    {
        "rule": "self.inputType != 'URL' || !has(self.streamKeySecretRef)",
        "message": "streamKeySecretRef is for RTMP and WHIP input only",
        "fieldPath": ".streamKeySecretRef",
    },
    {
        "rule": "!has(self.enableTranscoding) || self.enableTranscoding || self.inputType == 'WHIP'",
        "message": "transcoding can only be disabled for WHIP input",
        "fieldPath": ".enableTranscoding",
    },
    {
        "rule": f"!({_TRANSCODING_OFF}) || ({_NO_ENCODING.format(k='video')} && "
        f"{_NO_ENCODING.format(k='audio')})",
        "message": "audio and video encoding options must be empty if transcoding is disabled",
    },
]
EXCLUSIVE = {"rule": "!(has(self.preset) && has(self.options))", "message": "set preset or options, not both"}
_QUALITY = "(has({v}.quality) ? {v}.quality : 'LOW')"
UNIQUE_QUALITY = {
    "rule": f"self.all(a, self.exists_one(b, {_QUALITY.format(v='b')} == {_QUALITY.format(v='a')}))",
    "message": "more than one layer with the same quality level",
}


def structural(schema: Schema) -> Schema:
    """Turn pydantic's JSON schema into a Kubernetes structural schema: refs inlined, optional
    fields unwrapped, titles and defaults dropped (the API server must not write defaults back
    into a spec that GitOps tools compare)."""
    defs = schema.get("$defs", {})

    def walk(node: Any) -> Any:
        if isinstance(node, list):
            return [walk(n) for n in node]
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            target = copy.deepcopy(defs[node["$ref"].rsplit("/", 1)[1]])
            extra = {k: v for k, v in node.items() if k != "$ref"}
            return walk({**target, **extra})
        if "anyOf" in node:
            options = [o for o in node["anyOf"] if o.get("type") != "null"]
            if len(options) == 1:
                extra = {k: v for k, v in node.items() if k != "anyOf"}
                return walk({**options[0], **extra})
        out: Schema = {}
        for key, value in node.items():
            if key in ("title", "default", "$defs"):
                continue
            if key == "const":
                out["enum"] = [value]
            elif key == "properties":
                out[key] = {name: walk(sub) for name, sub in value.items()}
            else:
                out[key] = walk(value)
        if "enum" in out and "type" not in out:
            out["type"] = "string"
        if out.get("format") == "date-time":
            out["type"] = "string"
        return out

    result: Schema = walk(schema)
    return result


def spec_schema() -> Schema:
    schema = structural(IngressSpec.model_json_schema(by_alias=True, mode="validation"))
    props = schema["properties"]
    props["inputType"]["x-kubernetes-validations"] = [
        {"rule": "self == oldSelf", "message": "inputType is immutable"}
    ]
    for kind in ("audio", "video"):
        props[kind]["x-kubernetes-validations"] = [dict(EXCLUSIVE)]
    props["video"]["properties"]["options"]["properties"]["layers"]["x-kubernetes-validations"] = [
        UNIQUE_QUALITY
    ]
    schema["x-kubernetes-validations"] = SPEC_RULES
    return schema


def status_schema() -> Schema:
    schema = structural(IngressCRStatus.model_json_schema(by_alias=True, mode="serialization"))
    conditions = schema["properties"]["conditions"]
    conditions["x-kubernetes-list-type"] = "map"
    conditions["x-kubernetes-list-map-keys"] = ["type"]
    schema.pop("required", None)
    return schema


def crd() -> Schema:
    """The whole CustomResourceDefinition object."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{PLURAL}.{GROUP}"},
        "spec": {
            "group": GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": KIND,
                "listKind": f"{KIND}List",
                "plural": PLURAL,
                "singular": KIND.lower(),
                "shortNames": ["lki"],
                "categories": ["livekit"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "selectableFields": [{"jsonPath": ".spec.roomName"}],
                    "additionalPrinterColumns": [
                        {"name": "ID", "type": "string", "jsonPath": ".status.ingressId"},
                        {"name": "Type", "type": "string", "jsonPath": ".spec.inputType"},
                        {"name": "Room", "type": "string", "jsonPath": ".spec.roomName"},
                        {"name": "Status", "type": "string", "jsonPath": ".status.state.status"},
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "An ingress of LiveKit media (RTMP, WHIP or a pulled URL) "
                            "into a room, as LiveKit's IngressInfo.",
                            "required": ["spec"],
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec_schema(),
                                "status": status_schema(),
                            },
                        }
                    },
                }
            ],
        },
    }


def render() -> str:
    """The CRD as the YAML checked in under crds/."""
    header = "# Generated by `python -m ingress_operator.crd` from ingress_operator/models.py; do not edit.\n"
    return header + yaml.dump(crd(), Dumper=_Dumper, sort_keys=False, width=120)


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True


if __name__ == "__main__":
    sys.stdout.write(render())
