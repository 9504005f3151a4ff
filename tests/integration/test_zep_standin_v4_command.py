"""``engram-voice zep-standin`` (what ``make run`` starts) serves v2 and v4 on one port."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from zep_cloud.client import AsyncZep
from zep_cloud.errors import BadRequestError
from zep_cloud.types import AddMessage

from tests.support.servers import ServiceProcess

KEY = "command-key-0123456789"


async def test_the_command_serves_both_subsets_with_its_env_settings(tmp_path: Path):
    """The process reads ZEP_STANDIN_V4_MAX_CONTENT_CHARS and answers v4 and v2 calls."""
    process = ServiceProcess(
        ["zep-standin"],
        {
            "ZEP_STANDIN_API_KEY": KEY,
            "ZEP_STANDIN_DB": str(tmp_path / "zep.sqlite3"),
            "ZEP_STANDIN_V4_MAX_CONTENT_CHARS": "10",
        },
        log_path=tmp_path / "zep.log",
    ).start()
    try:
        zep = AsyncZep(api_key=KEY, base_url=f"{process.base_url}/api/v4", max_retries=0)
        user = await zep.user.create(user_id="u1")
        assert user.uuid_ is not None
        thread = await zep.thread.create(user_uuid=user.uuid_)
        assert thread.uuid_ is not None
        await zep.thread.add_messages(
            thread.uuid_, messages=[AddMessage(content="x" * 10, role="user")]
        )
        with pytest.raises(BadRequestError):
            await zep.thread.add_messages(
                thread.uuid_, messages=[AddMessage(content="x" * 11, role="user")]
            )
        async with httpx.AsyncClient(base_url=process.base_url, timeout=5) as http:
            v2 = await http.post(
                "/api/v2/users", json={"user_id": "u1"}, headers={"Authorization": f"Api-Key {KEY}"}
            )
            state = (await http.get("/_standin/state")).json()
        assert v2.status_code == 201
        assert (state["counts"]["users"], state["counts"]["v4_messages"]) == (1, 1)
    finally:
        process.stop()
