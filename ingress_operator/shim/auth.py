"""LiveKit API tokens: HS256 JWTs whose issuer is an API key, with the ingressAdmin video grant."""

from __future__ import annotations

import warnings
from collections.abc import Mapping

import jwt

from ingress_operator.errors import InvalidToken, Unauthenticated

# LiveKit's dev secret ("secret") and many deployed ones are shorter than RFC 7518 advises;
# LiveKit accepts them, so must we, without a warning per request.
warnings.filterwarnings("ignore", category=jwt.warnings.InsecureKeyLengthWarning)

BEARER = "Bearer "
LEEWAY_SECONDS = 60  # LiveKit's verifier allows a minute of clock skew on exp and nbf


def token_from(authorization: str | None, access_token: str | None) -> str | None:
    """The token from `Authorization: Bearer ...`, else from `?access_token=`."""
    if authorization:
        if not authorization.startswith(BEARER):
            raise InvalidToken(f"invalid authorization header. Must start with {BEARER}")
        return authorization[len(BEARER) :]
    return access_token or None


def verify(token: str, keys: Mapping[str, str]) -> dict[str, object]:
    """The token's claims if it verifies against `keys` (API key → secret); InvalidToken if not."""
    try:
        header = jwt.get_unverified_header(token)
        claims = jwt.decode(token, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise InvalidToken("invalid authorization token") from None
    if header.get("alg") != "HS256":
        raise InvalidToken("invalid authorization token")
    api_key = str(claims.get("iss") or "")
    secret = keys.get(api_key)
    if not secret:
        raise InvalidToken(f"invalid API key: {api_key}")
    try:
        verified: dict[str, object] = jwt.decode(
            token, secret, algorithms=["HS256"], options={"verify_aud": False}, leeway=LEEWAY_SECONDS
        )
    except jwt.ExpiredSignatureError:
        raise InvalidToken("invalid token: token is expired (exp)") from None
    except jwt.ImmatureSignatureError:
        raise InvalidToken("invalid token: token not valid yet (nbf)") from None
    except jwt.PyJWTError as err:
        raise InvalidToken(f"invalid token: {err}") from None
    return verified


def require_ingress_admin(claims: Mapping[str, object] | None) -> None:
    """Unauthenticated ("permissions denied") unless the claims grant ingressAdmin."""
    video = (claims or {}).get("video")
    if not isinstance(video, dict) or video.get("ingressAdmin") is not True:
        raise Unauthenticated()
