"""``AUTH_MODE=easyauth``: trust the principal headers of Azure Container Apps built-in auth.

Container Apps (like App Service) authenticates the user at its ingress and forwards the
request with ``X-MS-CLIENT-PRINCIPAL-ID``, ``-NAME``, ``-IDP`` and ``X-MS-CLIENT-PRINCIPAL``
(base64 JSON with the token's claims), removing any such headers the client sent.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping

import msgspec
import structlog

from engram_voice.auth.caller import Caller, lower_headers, user_id_problem
from engram_voice.errors import AuthenticationError

__all__ = ["OBJECT_ID_CLAIM", "EasyAuthAuthenticator"]

OBJECT_ID_CLAIM = "http://schemas.microsoft.com/identity/claims/objectidentifier"
_ENTRA_IDPS = frozenset({"aad", "azureactivedirectory"})
_MAX_PRINCIPAL_CHARS = 32_768
_MAX_ID_CHARS = 256
_logger = structlog.get_logger("engram_voice.auth")


class _Claim(msgspec.Struct):
    typ: str
    val: str


class _Principal(msgspec.Struct):
    claims: list[_Claim] = []
    auth_typ: str | None = None


def _decode_principal(blob: str) -> _Principal:
    if len(blob) > _MAX_PRINCIPAL_CHARS:
        raise AuthenticationError("The X-MS-CLIENT-PRINCIPAL header is too large.")
    try:
        raw = base64.b64decode(blob + "=" * (-len(blob) % 4), validate=False)
        return msgspec.json.decode(raw, type=_Principal)
    except (binascii.Error, ValueError, msgspec.DecodeError):
        _logger.warning("auth.easyauth_principal_malformed")
        raise AuthenticationError(
            "The X-MS-CLIENT-PRINCIPAL header is not base64-encoded principal JSON."
        ) from None


def _claim(principal: _Principal, *types: str) -> str | None:
    for claim in principal.claims:
        if claim.typ in types and claim.val.strip():
            return claim.val.strip()
    return None


class EasyAuthAuthenticator:
    """Reads the caller from platform-injected principal headers (Container Apps EasyAuth).

    Only safe when every request reaches this service through platform-authenticated
    ingress (Container Apps authentication enabled and set to require sign-in), because
    the platform then strips these headers from client requests. If the container is
    reachable any other way, anyone can send the headers and impersonate any user: use
    ``AUTH_MODE=entra`` there instead.

    For Entra ID principals the user id is the object id (``oid``), so the same person has
    the same id in ``entra`` and ``easyauth`` modes; other identity providers' ids are
    prefixed with the provider name (``github:1234``) so they can never collide.
    """

    async def authenticate(self, headers: Mapping[str, str]) -> Caller:
        """Return the caller the platform authenticated, or raise 401 when there is none."""
        lowered = lower_headers(headers)
        blob = lowered.get("x-ms-client-principal", "").strip()
        principal = _decode_principal(blob) if blob else _Principal()
        idp = (
            lowered.get("x-ms-client-principal-idp", "").strip() or principal.auth_typ or "aad"
        ).lower()
        object_id = _claim(principal, OBJECT_ID_CLAIM, "oid")
        user_id = object_id or lowered.get("x-ms-client-principal-id", "").strip()
        if not user_id:
            _logger.info("auth.token_rejected", reason="missing_principal")
            raise AuthenticationError(
                "Sign in first: no authenticated principal was forwarded by the platform "
                "(X-MS-CLIENT-PRINCIPAL-ID is missing).",
                extra={"reason": "missing_principal"},
            )
        if len(user_id) > _MAX_ID_CHARS:
            raise AuthenticationError("The X-MS-CLIENT-PRINCIPAL-ID header is too long.")
        if idp not in _ENTRA_IDPS:
            user_id = f"{idp}:{user_id}"
        if problem := user_id_problem(user_id):
            _logger.info("auth.token_rejected", reason="unusable_principal")
            raise AuthenticationError(
                f"The forwarded principal id is not a usable user id: {problem}.",
                extra={"reason": "unusable_principal"},
            )
        name = lowered.get("x-ms-client-principal-name", "").strip() or _claim(
            principal, "name", "preferred_username"
        )
        return Caller(user_id=user_id, display_name=name or None, auth_mode="easyauth")
