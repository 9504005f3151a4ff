"""Fuzz the real service from its own OpenAPI schema: no 5xx, every answer as declared.

The app runs in-process on a loopback port against the Azure emulator; schemathesis reads
``/schema/openapi.json`` from it and sends, per operation, a bounded and derandomized
number of schema-conforming (positive) and schema-violating (negative) requests. Every
answer must be below 500 and match the declared status, content type and body schema.
Mint and call cases are steered to real agents (a generated SDP offer is refused with
a 400, by the service or by the emulator's peer) and enrich cases get a valid memory token for
whatever ``session_id`` they carry, so valid bodies reach the 201 and 202 answers too
(progress cases, mostly, for the session they ask about: the 200).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from engram_voice.app import create_app
from engram_voice.credentials.secret import Secret
from engram_voice.memory.tokens import MemoryTokenSigner
from engram_voice.settings import Settings
from tests.conftest import Emulator, service_env
from tests.support.servers import serve_app

MAX_EXAMPLES = 50
"""Examples per operation and mode (8 runs): the whole module stays well under a minute."""

OPERATIONS = [
    ("POST", "/realtime/sessions"),
    ("POST", "/realtime/calls"),
    ("DELETE", "/realtime/calls/{call_id}"),
    ("POST", "/memory/enrich"),
    ("GET", "/memory/sessions/{session_id}/progress"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/status"),
    ("GET", "/metrics"),
]
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
AGENTS = ("elena", "marcus", "sage")
SIGNER = MemoryTokenSigner([("k1", Secret("f" * 64))])


@pytest.fixture(name="service_url", scope="module")
def fixture_service_url(emulator: Emulator) -> Iterator[str]:
    """Serve the real app on loopback (memory on, no Zep, a mint limit the fuzzer won't hit)."""
    env = service_env(emulator, MEMORY_TOKEN_KEYS=f"k1:{'f' * 64}", MINT_RATE_LIMIT="100000/minute")
    with serve_app(create_app(Settings.from_env(env)), ready_path="/healthz") as url:
        yield url


@pytest.fixture(name="schema", scope="module")
def fixture_schema(service_url: str) -> Any:
    """Load the schema the running service serves about itself."""
    return schemathesis.openapi.from_url(f"{service_url}/schema/openapi.json")


def test_the_fuzzed_operations_are_every_operation_of_the_schema(schema: Any) -> None:
    """The list fuzzed below is exactly the schema's operations, so a new route is fuzzed too."""
    found = {
        (result.ok().method.upper(), result.ok().path) for result in schema.get_all_operations()
    }
    assert found == set(OPERATIONS)


def _prepare(case: Any) -> dict[str, str]:
    """Steer a case toward the deeper paths; return the headers to send with it.

    A generated agent id is almost never a real one, so three in four mint and call cases
    name a catalog agent (chosen by a hash of the generated one, so runs stay reproducible) and
    reach the emulator and the 201. An enrich case gets a valid memory token for its own
    session, in the header and, where it has one, in the body (the two agree).
    """
    body = case.body
    if case.path in {"/realtime/sessions", "/realtime/calls"} and isinstance(body, dict):
        agent = body.get("agent")
        if isinstance(agent, str):
            body["agent"] = (*AGENTS, agent)[zlib.crc32(agent.encode()) % (len(AGENTS) + 1)]
        return {}
    if case.path == "/memory/sessions/{session_id}/progress":
        # Three in four cases hold the token of the session they ask about (200), the rest
        # none (401).
        session = (case.path_parameters or {}).get("session_id")
        if not isinstance(session, str) or not session or zlib.crc32(session.encode()) % 4 == 0:
            return {}
        token = SIGNER.issue(session_id=session, user_id="local-user", agent="elena").token
        return {"Authorization": f"Bearer {token}"}
    if case.path != "/memory/enrich" or not isinstance(body, dict):
        return {}
    session = body.get("session_id")
    if not isinstance(session, str) or not session or len(session) > 128:
        return {}
    token = SIGNER.issue(session_id=session, user_id="local-user", agent="elena").token
    if "token" in body:
        body["token"] = token
    return {"Authorization": f"Bearer {token}"}


RUNS = [
    *((method, path, GenerationMode.POSITIVE) for method, path in OPERATIONS),
    # Only operations with an input can be sent something that violates the schema.
    *((method, path, GenerationMode.NEGATIVE) for method, path in OPERATIONS if method == "POST"),
]


@pytest.mark.parametrize(("method", "path", "mode"), RUNS)
def test_fuzzed_requests_get_declared_answers_and_never_a_5xx(
    schema: Any, service_url: str, method: str, path: str, mode: GenerationMode
) -> None:
    """Generated requests (valid and invalid) get no 5xx and answers conforming to the schema."""
    operation = schema[path][method]

    @settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,  # the same examples on every run: a failure reproduces
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case: Any) -> None:
        case.call_and_validate(
            base_url=service_url, headers=_prepare(case), checks=CHECKS, timeout=20
        )

    run()
