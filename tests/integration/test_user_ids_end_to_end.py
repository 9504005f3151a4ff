"""Any user id the auth modes produce gets every session delivered, through the real service.

The service, the Azure emulator and the Zep stand-in all run in this process on loopback;
callers are EasyAuth principals whose ids hold URL-reserved characters.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from zep_cloud.client import AsyncZep
from zep_python.base_client import AsyncBaseClient
from zep_python.core.api_error import ApiError

from engram_voice.credentials.secret import Secret
from engram_voice.emulator import create_emulator_app
from engram_voice.memory.zep_cloud_wire import zep_user_id
from engram_voice.memory.zep_sink import zep_id
from engram_voice.zep_standin import ZepStandinConfig, create_standin_app
from tests.conftest import ServiceFactory
from tests.support.emulator_harness import TestKeys, emulator_config
from tests.support.polling import async_poll_until
from tests.support.servers import serve_app

ZEP_KEY = "zep-ids-key-0123456789"

# Principal ids as the platform could forward them (before the ``idp:`` prefix is added).
PRINCIPAL_IDS = [
    ("aad", "a/b"),
    ("aad", "x?y=1#z"),
    ("github", "a/b"),
    ("aad", "%2F%41"),
    ("aad", ".."),
    ("aad", "."),
    ("twitter", "Zoë 用户"),
    ("aad", "x" * 256),
]


@pytest.fixture(name="urls", scope="module")
def fixture_urls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, str]]:
    """Serve the emulator and the Zep stand-in; yield their URLs and the emulator's key."""
    keys = TestKeys()
    folder = tmp_path_factory.mktemp("zep-ids")
    config = ZepStandinConfig(api_key=Secret(ZEP_KEY), db_path=str(folder / "zep.sqlite3"))
    with (
        serve_app(create_emulator_app(emulator_config(keys)), ready_path="/healthz") as azure,
        serve_app(create_standin_app(config), ready_path="/healthz") as zep,
    ):
        yield azure, zep, keys.key1


def _env(urls: tuple[str, str, str], **extra: str) -> dict[str, str]:
    azure, zep, key = urls
    return {
        "APP_ENV": "local",
        "AUTH_MODE": "easyauth",
        "AZURE_OPENAI_ENDPOINTS": azure,
        "AZURE_OPENAI_API_KEY": key,
        "MEMORY_TOKEN_KEYS": f"k1:{'a' * 64}",
        "MEMORY_SQLITE_PATH": str(Path(tempfile.mkdtemp(prefix="engram-ids-")) / "queue.db"),
        "SERVE_WEB": "false",
        "ZEP_API": "v2",
        "ZEP_API_URL": zep,
        "ZEP_API_KEY": ZEP_KEY,
        "MEMORY_POLL_SECONDS": "0.05",
        "MEMORY_BACKOFF_BASE_SECONDS": "0.1",
        "MEMORY_BACKOFF_MAX_SECONDS": "0.2",
        **extra,
    }


def _principal(idp: str, principal_id: str) -> dict[str, bytes]:
    # The platform forwards UTF-8 bytes; the service reads header values as Latin-1.
    return {
        "X-MS-CLIENT-PRINCIPAL-ID": principal_id.encode(),
        "X-MS-CLIENT-PRINCIPAL-IDP": idp.encode(),
    }


async def _session(client: httpx.AsyncClient, headers: dict[str, bytes], text: str) -> str:
    """Mint a session as the principal and post one turn to it; return the session id."""
    minted = await client.post("/realtime/sessions", json={"agent": "elena"}, headers=headers)
    assert minted.status_code == 201, minted.text
    body: dict[str, Any] = minted.json()
    turn = {"id": "m1", "role": "user", "text": text}
    posted = await client.post(
        "/memory/enrich",
        json={"session_id": body["session_id"], "messages": [turn]},
        headers={"Authorization": f"Bearer {body['memory']['token']}"},
    )
    assert posted.status_code == 202, posted.text
    return str(body["session_id"])


async def _two_sessions_delivered(
    urls: tuple[str, str, str],
    make_service: ServiceFactory,
    env: dict[str, str],
    headers: dict[str, bytes],
) -> list[str]:
    """Mint two sessions as one caller, post a turn to each; return the Zep users owning them.

    Fails unless both turns reach Zep and the queue holds no dead letter.
    """
    zep = AsyncBaseClient(base_url=f"{urls[1]}/api/v2", api_key=ZEP_KEY, timeout=5)

    async def delivered(sessions: list[str]) -> list[str]:
        contents: list[str] = []
        for session in sessions:
            try:
                memory = await zep.memory.get(session)
            except ApiError:  # 404 until the worker has created the session
                return []
            contents += [m.content for m in memory.messages or []]
        return contents if len(contents) == len(sessions) else []

    with make_service(env) as url:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            sessions = [await _session(client, headers, f"turn {n}") for n in range(2)]
            contents = await async_poll_until(
                lambda: delivered(sessions), timeout=20, what="delivery of both sessions"
            )
            status = (await client.get("/status")).json()["memory"]["queue"]
    assert contents == ["turn 0", "turn 1"]
    assert status["dead_letters"] == 0
    return [(await zep.memory.get_session(session)).user_id for session in sessions]


@pytest.mark.parametrize(("idp", "principal_id"), PRINCIPAL_IDS)
async def test_every_session_of_a_user_with_reserved_characters_is_delivered(
    urls: tuple[str, str, str], make_service: ServiceFactory, idp: str, principal_id: str
) -> None:
    """Both sessions of a user whose id holds reserved characters reach Zep, none dead."""
    owners = await _two_sessions_delivered(
        urls, make_service, _env(urls), _principal(idp, principal_id)
    )
    as_read = principal_id.encode().decode("latin-1")
    user_id = as_read if idp == "aad" else f"{idp}:{as_read}"
    assert owners == [zep_id(user_id)] * 2


@pytest.mark.parametrize("local_user_id", ["x?y=1#z", "a/b", ".."])
async def test_a_local_user_id_with_reserved_characters_is_delivered(
    urls: tuple[str, str, str], make_service: ServiceFactory, local_user_id: str
) -> None:
    """In ``none`` mode a ``LOCAL_USER_ID`` with reserved characters gets both sessions in."""
    env = _env(urls, AUTH_MODE="none", LOCAL_USER_ID=local_user_id)
    owners = await _two_sessions_delivered(urls, make_service, env, {})
    assert owners == [zep_id(local_user_id)] * 2


async def _two_sessions_delivered_v4(
    urls: tuple[str, str, str], make_service: ServiceFactory, headers: dict[str, bytes]
) -> dict[str, list[str]]:
    """Mint two sessions as one caller through the v4 sink; return each Zep user's contents."""
    zep = AsyncZep(api_key=ZEP_KEY, base_url=f"{urls[1]}/api/v4", max_retries=0)

    async def delivered(count: int) -> dict[str, list[str]]:
        by_user: dict[str, list[str]] = {}
        threads = await zep.thread.list(page_size=1000)
        for thread in threads.items or []:
            user = await zep.user.get(str(thread.user_uuid))
            pager = await zep.thread.list_messages(str(thread.uuid_))
            by_user.setdefault(str(user.user_id), []).extend([m.content or "" async for m in pager])
        return by_user if sum(map(len, by_user.values())) >= count else {}

    env = _env(urls, ZEP_API="v4")
    with make_service(env) as url:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            before = sum(map(len, (await delivered(0)).values()))
            sessions = [await _session(client, headers, f"v4 turn {n}") for n in range(2)]
            assert len(sessions) == 2
            contents = await async_poll_until(
                lambda: delivered(before + 2), timeout=20, what="delivery of both sessions"
            )
            status = (await client.get("/status")).json()["memory"]["queue"]
    assert status["dead_letters"] == 0
    return contents


@pytest.mark.parametrize(("idp", "principal_id"), PRINCIPAL_IDS)
async def test_every_session_of_any_user_reaches_one_zep_v4_user(
    urls: tuple[str, str, str], make_service: ServiceFactory, idp: str, principal_id: str
) -> None:
    """Through Zep v4 the user id is sent as Zep's user_id: both sessions land in one user."""
    contents = await _two_sessions_delivered_v4(urls, make_service, _principal(idp, principal_id))
    as_read = principal_id.encode().decode("latin-1")
    user_id = as_read if idp == "aad" else f"{idp}:{as_read}"
    assert sorted(contents[zep_user_id(user_id)]) == ["v4 turn 0", "v4 turn 1"]
