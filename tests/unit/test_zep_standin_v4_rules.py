"""Zep v4's request rules as the stand-in checks them, over whole classes of inputs."""

from __future__ import annotations

import json
import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engram_voice.zep_standin.store import ZepRuleError
from engram_voice.zep_standin.v4_idempotency import fingerprint
from engram_voice.zep_standin.v4_rules import (
    MAX_METADATA_KEYS,
    V4_MAX_MESSAGES_PER_CALL,
    V4_ROLES,
    AddMessageIn,
    check_messages,
    check_uuid,
)

LIMIT = 64
_scalars = st.one_of(st.text(max_size=5), st.integers(), st.floats(allow_nan=False), st.booleans())


def _ok(messages: list[AddMessageIn], limit: int = LIMIT) -> bool:
    try:
        check_messages(messages, max_content_chars=limit)
    except ZepRuleError as exc:
        status = exc.status
    else:
        return True
    assert status == 400
    return False


@given(st.integers(min_value=1, max_value=3 * LIMIT))
def test_content_is_accepted_exactly_up_to_the_limit(length):
    """Any content length is accepted if and only if it is within the configured limit."""
    assert _ok([AddMessageIn(content="x" * length, role="user")]) == (length <= LIMIT)


@given(st.integers(min_value=0, max_value=2 * V4_MAX_MESSAGES_PER_CALL))
def test_a_batch_holds_one_to_thirty_messages(count):
    """A batch is accepted if and only if it has 1-30 messages."""
    batch = [AddMessageIn(content="hi", role="user")] * count
    assert _ok(batch) == (1 <= count <= V4_MAX_MESSAGES_PER_CALL)


@given(st.one_of(st.none(), st.sampled_from(sorted(V4_ROLES | {"norole"})), st.text(max_size=9)))
def test_only_v4_roles_are_accepted(role):
    """A role is accepted if and only if it is user, assistant, system, function or tool."""
    assert _ok([AddMessageIn(content="hi", role=role)]) == (role in V4_ROLES)


@given(st.dictionaries(st.text(max_size=8), st.one_of(_scalars, st.lists(_scalars)), max_size=20))
def test_metadata_has_at_most_ten_keys_of_scalars(metadata):
    """Metadata of scalars (or arrays of them) is accepted if and only if it has <= 10 keys."""
    accepted = _ok([AddMessageIn(content="hi", role="user", metadata=metadata)])
    assert accepted == (len(metadata) <= MAX_METADATA_KEYS)


_not_scalar = st.one_of(st.none(), st.dictionaries(st.text(max_size=2), st.integers(), max_size=2))


@given(
    st.one_of(_not_scalar, st.lists(st.one_of(_not_scalar, st.lists(st.integers())), min_size=1))
)
def test_metadata_values_that_are_not_scalars_are_refused(value):
    """A null, an object, or an array holding a non-scalar as a metadata value is a 400."""
    assert not _ok([AddMessageIn(content="hi", role="user", metadata={"k": value})])


@pytest.mark.parametrize(
    "message",
    [
        AddMessageIn(content="", role="user"),
        AddMessageIn(content=None, role="user"),
        AddMessageIn(content="a\x00b", role="user"),
        AddMessageIn(content="hi", role="user", name="a\x00"),
        AddMessageIn(content="hi", role="user", uuid=str(uuid.uuid4())),
        AddMessageIn(content="hi", role="user", reference_time="yesterday"),
    ],
)
def test_other_broken_messages_are_refused(message):
    """Empty content, NUL characters, a client uuid or a bad reference_time are 400s."""
    assert not _ok([message])


def test_one_broken_message_refuses_the_whole_batch():
    """The rule error names the first broken message's field (v4 ``param``)."""
    batch = [AddMessageIn(content="ok", role="user"), AddMessageIn(content="x" * 65, role="tool")]
    with pytest.raises(ZepRuleError) as raised:
        check_messages(batch, max_content_chars=LIMIT)
    assert (raised.value.code, raised.value.param) == ("invalid_request", "messages[1].content")


@given(st.uuids())
def test_any_uuid_addresses_a_resource(value):
    """Every UUID, in either case, is a valid v4 identifier (returned lower-case)."""
    assert check_uuid(str(value).upper(), "thread_uuid") == str(value)


@given(st.text(max_size=40))
def test_anything_else_is_an_invalid_identifier(text):
    """Text that is not a UUID is 400 ``invalid_identifier`` (a v3 id sent to v4)."""
    try:
        uuid.UUID(text)
        is_uuid = len(text) == 36
    except ValueError:
        is_uuid = False
    if is_uuid:
        return
    with pytest.raises(ZepRuleError) as raised:
        check_uuid(text, "user_uuid")
    assert (raised.value.status, raised.value.code) == (400, "invalid_identifier")


@given(st.dictionaries(st.text(max_size=5), st.integers(), max_size=6))
def test_a_request_fingerprint_ignores_json_key_order_and_spacing(body):
    """Two encodings of the same JSON body on the same path have one fingerprint."""
    compact = json.dumps(body, separators=(",", ":")).encode()
    spaced = json.dumps(dict(reversed(list(body.items()))), indent=2).encode()
    assert fingerprint("POST", "/t", compact) == fingerprint("POST", "/t", spaced)
    assert fingerprint("POST", "/t", compact) != fingerprint("POST", "/u", compact)
