"""API tokens are checked as LiveKit checks them."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest

from ingress_operator.errors import InvalidToken, Unauthenticated
from ingress_operator.shim import auth

KEYS = {"devkey": "secret"}


def token(secret: str = "secret", alg: str = "HS256", **claims: Any) -> str:
    body = {"iss": "devkey", "exp": int(time.time()) + 60, "video": {"ingressAdmin": True}, **claims}
    return jwt.encode({k: v for k, v in body.items() if v is not None}, secret, algorithm=alg)


def test_a_valid_token_verifies_and_grants() -> None:
    auth.require_ingress_admin(auth.verify(token(), KEYS))


def test_a_token_without_exp_is_accepted() -> None:
    auth.verify(token(exp=None), KEYS)


@pytest.mark.parametrize(
    ("tok", "message"),
    [
        (token(secret="wrong"), "invalid token: "),
        (token(exp=int(time.time()) - 90), "token is expired"),
        (token(nbf=int(time.time()) + 600), "not valid yet"),
        (token(iss="nokey"), "invalid API key: nokey"),
        (token(iss=None), "invalid API key: "),
        ("garbage", "invalid authorization token"),
        (jwt.encode({"iss": "devkey"}, None, algorithm="none"), "invalid authorization token"),
        (jwt.encode({"iss": "devkey"}, "secret" * 8, algorithm="HS512"), "invalid authorization token"),
    ],
)
def test_tokens_that_fail_verification(tok: str, message: str) -> None:
    with pytest.raises(InvalidToken, match=message):
        auth.verify(tok, KEYS)


def test_header_must_start_with_bearer() -> None:
    with pytest.raises(InvalidToken, match="Must start with Bearer"):
        auth.token_from("Basic abc", None)
    assert auth.token_from(None, "t") == "t"
    assert auth.token_from("Bearer t", "other") == "t"
    assert auth.token_from(None, None) is None


@pytest.mark.parametrize(
    "claims", [None, {}, {"video": {"roomAdmin": True}}, {"video": {"ingressAdmin": "yes"}}]
)
def test_ingress_admin_grant_is_required(claims: dict[str, Any] | None) -> None:
    with pytest.raises(Unauthenticated, match="permissions denied"):
        auth.require_ingress_admin(claims)


def test_a_minute_of_clock_skew_is_allowed_as_livekit_does() -> None:
    auth.verify(token(nbf=int(time.time()) + 30), KEYS)
    auth.verify(token(exp=int(time.time()) - 30), KEYS)
