"""Twirp wire formats: protobuf and JSON request decoding and response encoding.

JSON follows Go's protojson as Twirp uses it: original (snake_case) names, every field emitted
(`null` for an unset message, `[]`, `""`), int64 as strings, enums by name; optional scalars and
unset oneofs stay absent.
"""

from __future__ import annotations

import json
from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message

from ingress_operator.errors import BadRoute, InvalidArgument, Malformed

PROTOBUF = "application/protobuf"
JSON = "application/json"

M = TypeVar("M", bound=Message)


def wire_format(content_type: str | None) -> str:
    """`application/protobuf` or `application/json` (parameters such as charset allowed)."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media == PROTOBUF:
        return PROTOBUF
    if media == JSON:
        return JSON
    raise BadRoute(f"unexpected Content-Type: {content_type!r}")


def decode(body: bytes, fmt: str, message: type[M]) -> M:
    """Decode a request body; undecodable input is `malformed`, an unknown enum name `invalid_argument`."""
    if fmt == PROTOBUF:
        try:
            return message.FromString(body)
        except DecodeError:
            raise Malformed("the protobuf request could not be decoded") from None
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        data = None
    if not isinstance(data, dict):
        raise Malformed("the json request could not be decoded")
    try:
        _check_fields(data, message.DESCRIPTOR, "")
        return json_format.ParseDict(data, message(), ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError, RecursionError):
        raise Malformed("the json request could not be decoded") from None


def _check_fields(data: dict[str, Any], desc: Any, path: str) -> None:
    """One field given twice (snake and camel) is malformed. LiveKit silently maps an unknown enum
    name to 0; we refuse it as invalid_argument, naming the field."""
    seen: set[str] = set()
    field: Any
    for key, value in data.items():
        field = desc.fields_by_name.get(key) or desc.fields_by_camelcase_name.get(key)
        if field is None:
            continue
        if field.name in seen:
            raise Malformed("the json request could not be decoded")
        seen.add(field.name)
        if value is None:
            continue
        where = f"{path}{field.name}"
        values = value if isinstance(value, list) else [value]
        if field.type == FieldDescriptor.TYPE_ENUM:
            for v in values:
                if isinstance(v, str) and v not in field.enum_type.values_by_name:
                    raise InvalidArgument(f"unknown enum value {v!r}", where)
        elif field.type == FieldDescriptor.TYPE_MESSAGE and not field.message_type.GetOptions().map_entry:
            for v in values:
                if isinstance(v, dict):
                    _check_fields(v, field.message_type, where + ".")


def encode(message: Message, fmt: str) -> bytes:
    """Encode a response in the request's wire format."""
    if fmt == PROTOBUF:
        return message.SerializeToString()
    return json.dumps(to_json(message), separators=(",", ":")).encode()


def to_json(message: Message) -> dict[str, Any]:
    """protojson with EmitUnpopulated and original names, as a dict."""
    data = json_format.MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    _fill_nulls(message, data)
    return data


def _fill_nulls(message: Message, data: dict[str, Any]) -> None:
    field: Any
    for field in message.DESCRIPTOR.fields:
        if field.type != FieldDescriptor.TYPE_MESSAGE or field.containing_oneof is not None:
            continue
        if field.is_repeated:
            if not field.message_type.GetOptions().map_entry:
                for item, sub in zip(getattr(message, field.name), data.get(field.name, []), strict=False):
                    _fill_nulls(item, sub)
        elif message.HasField(field.name):
            _fill_nulls(getattr(message, field.name), data[field.name])
        else:
            data[field.name] = None
