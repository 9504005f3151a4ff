"""Caller identity from the principal headers Azure Container Apps built-in auth injects."""

from __future__ import annotations

import base64
import json

import pytest
from litestar.datastructures import Headers

from engram_voice.auth import Caller, EasyAuthAuthenticator, NoAuthenticator
from engram_voice.auth.easyauth import OBJECT_ID_CLAIM
from engram_voice.errors import AuthenticationError

OID = "11111111-2222-3333-4444-555555555555"


def principal_blob(*claims: tuple[str, str], auth_typ: str = "aad") -> str:
    """Return an ``X-MS-CLIENT-PRINCIPAL`` value carrying ``claims``."""
    document = {
        "auth_typ": auth_typ,
        "claims": [{"typ": typ, "val": val} for typ, val in claims],
        "name_typ": "http://schemas.xmlsoap.org/ws/2005/05/identity/claims/emailaddress",
        "role_typ": "http://schemas.microsoft.com/ws/2008/06/identity/claims/role",
    }
    return base64.b64encode(json.dumps(document).encode()).decode()


@pytest.fixture(name="authenticator")
def fixture_authenticator() -> EasyAuthAuthenticator:
    """Return the EasyAuth authenticator."""
    return EasyAuthAuthenticator()


async def test_principal_id_and_name_headers_identify_the_caller(
    authenticator: EasyAuthAuthenticator,
) -> None:
    """The id and name headers of an Entra principal become the caller."""
    caller = await authenticator.authenticate(
        {
            "X-MS-CLIENT-PRINCIPAL-ID": OID,
            "X-MS-CLIENT-PRINCIPAL-NAME": "ada@example.com",
            "X-MS-CLIENT-PRINCIPAL-IDP": "aad",
        }
    )
    assert caller == Caller(user_id=OID, display_name="ada@example.com", auth_mode="easyauth")


async def test_litestar_request_headers_are_read(authenticator: EasyAuthAuthenticator) -> None:
    """Headers as Litestar hands them over (lower-case ASGI names) are understood."""
    headers = Headers([(b"x-ms-client-principal-id", OID.encode())])
    caller = await authenticator.authenticate(headers)
    assert caller.user_id == OID


async def test_object_id_claim_of_the_principal_blob_wins(
    authenticator: EasyAuthAuthenticator,
) -> None:
    """The ``objectidentifier`` claim is the user id even when the id header differs."""
    caller = await authenticator.authenticate(
        {
            "X-MS-CLIENT-PRINCIPAL-ID": "some-other-id",
            "X-MS-CLIENT-PRINCIPAL": principal_blob((OBJECT_ID_CLAIM, OID)),
        }
    )
    assert caller.user_id == OID


async def test_principal_blob_alone_is_enough(authenticator: EasyAuthAuthenticator) -> None:
    """A principal blob with the object id and name claims identifies the caller by itself."""
    blob = principal_blob((OBJECT_ID_CLAIM, OID), ("name", "Ada Lovelace"))
    caller = await authenticator.authenticate({"x-ms-client-principal": blob})
    assert caller == Caller(user_id=OID, display_name="Ada Lovelace", auth_mode="easyauth")


async def test_unpadded_principal_blob_is_accepted(authenticator: EasyAuthAuthenticator) -> None:
    """A principal blob whose base64 padding was stripped still decodes."""
    blob = principal_blob((OBJECT_ID_CLAIM, OID), ("name", "A")).rstrip("=")
    caller = await authenticator.authenticate({"X-MS-CLIENT-PRINCIPAL": blob})
    assert caller.user_id == OID


async def test_missing_principal_is_rejected(authenticator: EasyAuthAuthenticator) -> None:
    """A request without principal headers (auth not enforced at ingress) answers 401."""
    with pytest.raises(AuthenticationError) as info:
        await authenticator.authenticate({"Authorization": "Bearer something"})
    assert info.value.status == 401
    assert "X-MS-CLIENT-PRINCIPAL-ID" in info.value.detail


async def test_blank_principal_id_is_rejected(authenticator: EasyAuthAuthenticator) -> None:
    """A blank principal id header is the same as a missing one."""
    with pytest.raises(AuthenticationError):
        await authenticator.authenticate({"X-MS-CLIENT-PRINCIPAL-ID": "   "})


@pytest.mark.parametrize(
    "blob",
    ["%%%not-base64%%%", base64.b64encode(b"not json").decode(), base64.b64encode(b"[1]").decode()],
)
async def test_malformed_principal_blob_is_rejected(
    authenticator: EasyAuthAuthenticator, blob: str
) -> None:
    """A principal blob that is not base64 principal JSON answers 401 saying so."""
    with pytest.raises(AuthenticationError) as info:
        await authenticator.authenticate(
            {"X-MS-CLIENT-PRINCIPAL-ID": OID, "X-MS-CLIENT-PRINCIPAL": blob}
        )
    assert "X-MS-CLIENT-PRINCIPAL" in info.value.detail


async def test_other_identity_providers_are_namespaced(
    authenticator: EasyAuthAuthenticator,
) -> None:
    """A GitHub principal's id is prefixed so it can never equal an Entra object id."""
    caller = await authenticator.authenticate(
        {
            "X-MS-CLIENT-PRINCIPAL-ID": "1234",
            "X-MS-CLIENT-PRINCIPAL-NAME": "octocat",
            "X-MS-CLIENT-PRINCIPAL-IDP": "github",
        }
    )
    assert caller.user_id == "github:1234"
    assert caller.display_name == "octocat"


async def test_no_authenticator_returns_the_local_user() -> None:
    """``AUTH_MODE=none`` makes every request the configured local user."""
    caller = await NoAuthenticator("dev-ada").authenticate({})
    assert caller == Caller(user_id="dev-ada", display_name=None, auth_mode="none")


@pytest.mark.parametrize("oid", ["a\x00b", "a\nb", "a\x1bb", "a\x7fb", "\x01"])
async def test_an_unusable_principal_id_is_refused_with_a_clear_401(
    authenticator: EasyAuthAuthenticator, oid: str
) -> None:
    """A principal id with a control character is refused at once, saying why."""
    blob = principal_blob((OBJECT_ID_CLAIM, oid))
    with pytest.raises(AuthenticationError) as info:
        await authenticator.authenticate({"X-MS-CLIENT-PRINCIPAL": blob})
    assert "not a usable user id" in info.value.detail
    assert info.value.extra == {"reason": "unusable_principal"}


@pytest.mark.parametrize("oid", ["a\ud800b", "x" * 600])
async def test_lone_surrogates_and_huge_ids_are_refused(
    authenticator: EasyAuthAuthenticator, oid: str
) -> None:
    """A lone surrogate (not JSON text) or an oversized id never becomes a caller."""
    blob = principal_blob((OBJECT_ID_CLAIM, oid))
    with pytest.raises(AuthenticationError):
        await authenticator.authenticate({"X-MS-CLIENT-PRINCIPAL": blob})


@pytest.mark.parametrize("principal_id", ["a/b", "x?y=1#z", "%2F", "..", "Zoë 用户"])
async def test_url_reserved_characters_are_valid_in_an_id(
    authenticator: EasyAuthAuthenticator, principal_id: str
) -> None:
    """Ids with URL-reserved characters, dots or unicode are accepted as they are."""
    caller = await authenticator.authenticate({"X-MS-CLIENT-PRINCIPAL-ID": principal_id})
    assert caller.user_id == principal_id
