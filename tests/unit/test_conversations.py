import pytest

from engram_voice.errors import ForbiddenError
from engram_voice.realtime.conversations import ConversationIds


def test_a_user_can_continue_their_own_conversation() -> None:
    """An id issued to a user resolves to itself for that user."""
    ids = ConversationIds([b"k" * 32])
    conversation = ids.new("alice")
    assert ids.resolve("alice", conversation) == conversation


def test_another_user_cannot_adopt_a_conversation() -> None:
    """An id issued to one user is refused with 403 for another."""
    ids = ConversationIds([b"k" * 32])
    with pytest.raises(ForbiddenError):
        ids.resolve("mallory", ids.new("alice"))


def test_ids_signed_with_a_previous_key_stay_valid_after_rotation() -> None:
    """Rotating the signing key keeps ids issued under the old key usable."""
    old = ConversationIds([b"o" * 32]).new("alice")
    rotated = ConversationIds([b"n" * 32, b"o" * 32])
    assert rotated.resolve("alice", old) == old


def test_no_conversation_id_starts_a_new_one() -> None:
    """Omitting the id yields a fresh, well-formed conversation id."""
    ids = ConversationIds([b"k" * 32])
    first = ids.resolve("alice", None)
    assert first.startswith("cv_")
    assert first != ids.resolve("alice", None)
