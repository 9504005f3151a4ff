"""A password source that fails while the queue connects is a reason to retry, never a crash.

The shared queue is opened in the background and retried only on
:class:`~engram_voice.memory.queue.QueueUnavailableError`; anything else ends the attempts
for good (the process then never connects). An Entra token that cannot be had at start-up
(the managed identity endpoint not up yet, Entra slow or refusing) must therefore surface
as that error, with a neutral reason that carries nothing of the credential's message.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import pytest
from azure.core.exceptions import ClientAuthenticationError, ServiceRequestError
from azure.identity import CredentialUnavailableError

from engram_voice.memory.connect import StorageConnector
from engram_voice.memory.postgres_auth import EntraPassword
from engram_voice.memory.postgres_queue import PostgresTurnQueue
from engram_voice.memory.queue import QueueUnavailableError
from tests.support.servers import free_port

LEAK = "tok-3xSECRETx9 from http://169.254.169.254/metadata?client_id=abc"
"""Text an identity library may put in its message: must never reach a reason."""


class _FailingCredential:
    """An azure-identity credential stand-in whose ``get_token`` fails as told."""

    def __init__(self, error: BaseException | None) -> None:
        self._error = error
        self.calls = 0

    async def get_token(self, *scopes: str, **kwargs: Any) -> Any:  # noqa: ARG002
        """Fail with the error (None: never answer)."""
        self.calls += 1
        if self._error is None:
            await asyncio.Event().wait()
        raise self._error  # type: ignore[misc]

    async def close(self) -> None:
        """Nothing to release."""


ERRORS = [
    pytest.param(None, id="no-answer"),
    pytest.param(CredentialUnavailableError(LEAK), id="identity-unavailable"),
    pytest.param(ClientAuthenticationError(LEAK), id="refused"),
    pytest.param(ServiceRequestError(LEAK), id="unreachable"),
    pytest.param(aiohttp.ClientConnectionError(LEAK), id="transport"),
    pytest.param(OSError(LEAK), id="os"),
    pytest.param(TimeoutError(LEAK), id="timeout"),
]


@pytest.mark.parametrize("error", ERRORS)
async def test_an_entra_token_that_cannot_be_had_is_a_neutral_unavailable_reason(
    error: BaseException | None,
) -> None:
    """Every way of failing to get a token is QueueUnavailableError naming no credential text."""
    source = EntraPassword(_FailingCredential(error), timeout=0.05)
    with pytest.raises(QueueUnavailableError) as raised:
        await source.password()
    assert "SECRET" not in raised.value.reason
    assert "169.254" not in raised.value.reason
    assert raised.value.reason.startswith("database token unavailable")


@pytest.mark.parametrize("error", ERRORS)
async def test_the_background_connect_keeps_retrying_while_entra_fails(
    error: BaseException | None,
) -> None:
    """The queue's opener raises a retryable error, so the connector goes on trying."""
    credential = _FailingCredential(error)
    queue = PostgresTurnQueue(
        f"host=127.0.0.1 port={free_port()} dbname=none user=none",
        password=EntraPassword(credential, timeout=0.05),
        connect_timeout=1,
    )
    connector = StorageConnector([("queue", queue.open)], wait_initial=0.001, wait_max=0.002)
    running = asyncio.create_task(connector.run())
    try:
        async with asyncio.timeout(30):
            while connector.attempts < 3:
                assert not running.done(), running.exception()
                await asyncio.sleep(0.01)
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await queue.close()
    assert not connector.ready
    assert connector.last_error is not None
    assert "SECRET" not in connector.last_error
    assert credential.calls >= 3
