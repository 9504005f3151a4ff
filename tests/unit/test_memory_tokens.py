import jwt
import pytest

from engram_voice.credentials.secret import Secret
from engram_voice.errors import AuthenticationError
from engram_voice.memory.tokens import AZURE_MAX_SESSION_SECONDS, MemoryTokenSigner
from tests.support.clock import FakeClock

NEW = ("k2", Secret("n" * 64))
OLD = ("k1", Secret("o" * 64))


@pytest.fixture(name="clock")
def fixture_clock() -> FakeClock:
    """Return a fixed wall clock."""
    return FakeClock()


def test_issued_token_verifies_to_its_session_user_and_agent(clock):
    """A token carries exactly the session, user and agent it was issued for."""
    signer = MemoryTokenSigner([NEW], clock=clock)
    issued = signer.issue(session_id="vs_1", user_id="alice", agent="elena")
    claims = signer.verify(issued.token)
    assert (claims.session_id, claims.user_id, claims.agent) == ("vs_1", "alice", "elena")
    assert claims.key_id == "k2"
    assert claims.expires_at == issued.expires_at


def test_default_expiry_outlives_the_longest_azure_session(clock):
    """The default lifetime covers Azure's 30-minute cap plus a grace period."""
    issued = MemoryTokenSigner([NEW], clock=clock).issue(session_id="s", user_id="u", agent="a")
    assert issued.expires_at - clock.now > AZURE_MAX_SESSION_SECONDS


def test_expired_token_is_refused(clock):
    """A token past its expiry (and the small leeway) answers 401."""
    signer = MemoryTokenSigner([NEW], ttl_seconds=60, clock=clock)
    token = signer.issue(session_id="s", user_id="u", agent="a").token
    clock.advance(60 + 31)
    with pytest.raises(AuthenticationError, match="expired"):
        signer.verify(token)


def test_forged_signature_is_refused(clock):
    """A token signed with a key the service does not hold answers 401."""
    forged = jwt.encode(
        {"sid": "s", "sub": "u", "agt": "a", "aud": "engram-voice/memory", "exp": 2**40},
        "x" * 64,
        algorithm="HS256",
        headers={"kid": "k2"},
    )
    with pytest.raises(AuthenticationError):
        MemoryTokenSigner([NEW], clock=clock).verify(forged)


def test_unknown_key_id_and_garbage_are_refused(clock):
    """Tokens naming an unknown key id, or not being JWTs at all, answer 401."""
    other = MemoryTokenSigner([("k9", Secret("z" * 64))], clock=clock)
    token = other.issue(session_id="s", user_id="u", agent="a").token
    signer = MemoryTokenSigner([NEW], clock=clock)
    with pytest.raises(AuthenticationError, match="unknown key"):
        signer.verify(token)
    with pytest.raises(AuthenticationError, match="malformed"):
        signer.verify("not-a-token")


def test_rotation_keeps_old_tokens_valid_until_the_old_key_is_removed(clock):
    """After prepending a new key, old tokens verify; once the old key is gone, they do not."""
    old_token = MemoryTokenSigner([OLD], clock=clock).issue(session_id="s", user_id="u", agent="a")
    rotated = MemoryTokenSigner([NEW, OLD], clock=clock)
    assert rotated.verify(old_token.token).key_id == "k1"
    assert (
        rotated.verify(rotated.issue(session_id="s", user_id="u", agent="a").token).key_id == "k2"
    )
    with pytest.raises(AuthenticationError):
        MemoryTokenSigner([NEW], clock=clock).verify(old_token.token)


def test_grant_is_the_memory_object_of_a_minted_session(clock):
    """The grant names the enrich URL, a token for the session, and its expiry."""
    signer = MemoryTokenSigner([NEW], clock=clock)
    grant = signer.grant("vs_1", "alice", "elena")
    assert grant["enrich_url"] == "/memory/enrich"
    assert signer.verify(grant["token"]).session_id == "vs_1"
    assert grant["expires_at"] > clock.now


def test_signer_repr_shows_no_secret():
    """Printing the signer never shows a key."""
    assert "n" * 16 not in repr(MemoryTokenSigner([NEW]))


_CLAIM_VALUES = [
    ("vs_1", "alice", "elena"),
    ("vs_" + "f" * 32, "00000000-0000-0000-0000-000000000001", "marcus"),
    ("vs_2", "a/b", "sage"),
    ("vs_3", "x?y=1#z", "elena"),
    ("vs_4", 'quote" back\\slash', "elena"),
    ("vs_5", "tab\tnew\nline\u0001", "elena"),
    ("vs_6", "élan-ünïcode-日本", "elena"),
    ("vs_7", "emoji-\U0001f600", "elena"),
    ("vs_8", "sep\u2028line", "elena"),
]
_KEY_IDS = ["k2", "kid with spaces", 'q"uote', "ü-kid"]


@pytest.mark.parametrize(("session_id", "user_id", "agent"), _CLAIM_VALUES)
@pytest.mark.parametrize("kid", _KEY_IDS)
def test_pyjwt_verifies_tokens_the_signer_issues(clock, session_id, user_id, agent, kid):
    """Every token the signer writes is a valid HS256 JWT for PyJWT, with the same claims."""
    signer = MemoryTokenSigner([(kid, NEW[1])], clock=clock)
    issued = signer.issue(session_id=session_id, user_id=user_id, agent=agent)

    header = jwt.get_unverified_header(issued.token)
    claims = jwt.decode(
        issued.token,
        NEW[1].reveal(),
        algorithms=["HS256"],
        audience="engram-voice/memory",
        options={"verify_exp": False, "verify_iat": False},
    )

    assert header == {"alg": "HS256", "kid": kid, "typ": "JWT"}
    assert claims == {
        "sid": session_id,
        "sub": user_id,
        "agt": agent,
        "aud": "engram-voice/memory",
        "iat": int(clock.now),
        "exp": issued.expires_at,
    }


@pytest.mark.parametrize(("session_id", "user_id", "agent"), _CLAIM_VALUES)
@pytest.mark.parametrize("kid", _KEY_IDS)
def test_the_signer_verifies_tokens_pyjwt_issues(clock, session_id, user_id, agent, kid):
    """A token PyJWT signs with a configured key verifies to the same session, user, agent."""
    token = jwt.encode(
        {
            "sid": session_id,
            "sub": user_id,
            "agt": agent,
            "aud": "engram-voice/memory",
            "iat": int(clock.now),
            "exp": int(clock.now) + 60,
        },
        NEW[1].reveal(),
        algorithm="HS256",
        headers={"kid": kid},
    )

    claims = MemoryTokenSigner([(kid, NEW[1])], clock=clock).verify(token)

    assert (claims.session_id, claims.user_id, claims.agent, claims.key_id) == (
        session_id,
        user_id,
        agent,
        kid,
    )


@pytest.mark.parametrize(("session_id", "user_id", "agent"), _CLAIM_VALUES[:5])
def test_ascii_tokens_are_byte_for_byte_what_pyjwt_writes(clock, session_id, user_id, agent):
    """For ASCII claims the signer's token equals PyJWT's encoding of the same claims."""
    signer = MemoryTokenSigner([NEW], clock=clock)
    issued = signer.issue(session_id=session_id, user_id=user_id, agent=agent)
    claims = {
        "sid": session_id,
        "sub": user_id,
        "agt": agent,
        "aud": "engram-voice/memory",
        "iat": int(clock.now),
        "exp": issued.expires_at,
    }

    assert issued.token == jwt.encode(
        claims, NEW[1].reveal(), algorithm="HS256", headers={"kid": NEW[0]}
    )
