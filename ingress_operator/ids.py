"""Ingress ids and stream keys, as LiveKit makes them: 12 characters of the base57 shortuuid
alphabet from a cryptographic RNG."""

from __future__ import annotations

import secrets

ALPHABET = "23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
SIZE = 12
INGRESS_PREFIX = "IN_"


def guid(prefix: str = "") -> str:
    """`prefix` + 12 random characters."""
    return prefix + "".join(secrets.choice(ALPHABET) for _ in range(SIZE))


def new_ingress_id() -> str:
    return guid(INGRESS_PREFIX)


def new_stream_key() -> str:
    return guid()
