"""Put a user's memory into the Zep stand-in through the real SDKs (v2 and v4), as a sink would.

The readers' contract suite and the recall integration tests seed with these.
"""

from __future__ import annotations

from collections.abc import Sequence

from zep_cloud.client import AsyncZep
from zep_cloud.types import AddMessage
from zep_python.base_client import AsyncBaseClient
from zep_python.core.api_error import ApiError
from zep_python.types.message import Message

from engram_voice.memory.zep_cloud_wire import zep_user_id
from engram_voice.memory.zep_sink import zep_id

__all__ = ["seed_v2", "seed_v4"]


async def seed_v2(
    base_url: str, api_key: str, user_id: str, session_id: str, said: Sequence[str]
) -> None:
    """Store ``said`` (user turns) in a new v2 session of ``user_id`` (created when missing)."""
    client = AsyncBaseClient(base_url=f"{base_url}/api/v2", api_key=api_key, timeout=5)
    try:
        await client.user.add(user_id=zep_id(user_id))
    except ApiError as exc:  # the user exists already
        if exc.status_code != 400:
            raise
    await client.memory.add_session(session_id=zep_id(session_id), user_id=zep_id(user_id))
    messages = [Message(role_type="user", role="user", content=text) for text in said]
    await client.memory.add(session_id=zep_id(session_id), messages=messages)


async def seed_v4(base_url: str, api_key: str, user_id: str, said: Sequence[str]) -> str:
    """Store ``said`` (user turns) in a new v4 thread of ``user_id``; return the thread UUID.

    The Zep user is named as the v4 sink names it (:func:`zep_user_id`).
    """
    zep_user = zep_user_id(user_id)
    client = AsyncZep(base_url=f"{base_url}/api/v4", api_key=api_key, max_retries=0, timeout=5)
    try:
        user_uuid = (await client.user.lookup(user_id=zep_user)).uuid_
    except Exception:  # noqa: BLE001 - unknown (404): create it
        user_uuid = (await client.user.create(user_id=zep_user)).uuid_
    assert user_uuid is not None
    thread = await client.thread.create(user_uuid=user_uuid)
    assert thread.uuid_ is not None
    messages = [AddMessage(role="user", name="user", content=text) for text in said]
    await client.thread.add_messages(thread.uuid_, messages=messages)
    return thread.uuid_
