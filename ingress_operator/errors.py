"""Errors a user can see, each mapped once to a Twirp code (shim) and a condition reason (CR)."""

from __future__ import annotations

from typing import ClassVar

# Twirp's own table of codes to HTTP statuses (only the codes this project emits).
TWIRP_STATUS: dict[str, int] = {
    "invalid_argument": 400,
    "malformed": 400,
    "bad_route": 404,
    "not_found": 404,
    "already_exists": 409,
    "unauthenticated": 401,
    "permission_denied": 403,
    "unavailable": 503,
    "failed_precondition": 412,
    "internal": 500,
}


class IngressError(Exception):
    """Base of every failure a caller can see; `code` is the Twirp code, `reason` the CR condition reason."""

    code: ClassVar[str] = "internal"
    reason: ClassVar[str] = "InternalError"

    def __init__(self, msg: str) -> None:
        super().__init__(msg)
        self.msg = msg

    @property
    def http_status(self) -> int:
        return TWIRP_STATUS[self.code]


class InvalidArgument(IngressError):
    """A request or spec value breaks a rule; `field` names it (dotted path, as the caller spelled it)."""

    code = "invalid_argument"
    reason = "InvalidSpec"

    def __init__(self, msg: str, field: str = "") -> None:
        super().__init__(f"{field}: {msg}" if field else msg)
        self.field = field
        self.rule = msg


class Malformed(IngressError):
    """The request body could not be decoded."""

    code = "malformed"
    reason = "Malformed"


class BadRoute(IngressError):
    """Wrong path, method or content type, as Twirp reports it."""

    code = "bad_route"
    reason = "BadRoute"


class NotFound(IngressError):
    """No ingress with that id."""

    code = "not_found"
    reason = "NotFound"

    def __init__(self, msg: str = "ingress does not exist") -> None:
        super().__init__(msg)


class Unauthenticated(IngressError):
    """No token, or a valid token without the ingressAdmin grant (a Twirp JSON error)."""

    code = "unauthenticated"
    reason = "Unauthenticated"

    def __init__(self, msg: str = "permissions denied") -> None:
        super().__init__(msg)


class InvalidToken(IngressError):
    """A token that fails verification: LiveKit answers these with a plain-text 401, not Twirp JSON."""

    code = "unauthenticated"
    reason = "Unauthenticated"


class Unavailable(IngressError):
    """The Kubernetes API or the upstream LiveKit server can't be reached."""

    code = "unavailable"
    reason = "Unavailable"


class DuplicateIngressId(IngressError):
    """Another (older) LiveKitIngress already carries this ingress id label, e.g. a copied manifest."""

    code = "failed_precondition"
    reason = "DuplicateIngressId"


class StreamKeySecretMissing(IngressError):
    """streamKeySecretRef names a Secret (or key) that does not exist."""

    code = "failed_precondition"
    reason = "StreamKeySecretMissing"
