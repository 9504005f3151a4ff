"""The OpenAPI schema tells the truth about bodies and errors, and errors name their fields."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from litestar.testing import TestClient

from engram_voice.memory.schemas import EnrichRequest
from engram_voice.problem_docs import ProblemDetails

PROBLEM_JSON = "application/problem+json"


@pytest.fixture(name="schema")
def fixture_schema(client: TestClient[Any]) -> dict[str, Any]:
    """Return the OpenAPI document the app serves."""
    document: dict[str, Any] = client.get("/schema/openapi.json").json()
    return document


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"agent": "elena", "bogus": 1}, "bogus"),
        ({}, "agent"),
        ({"agent": 5}, "agent"),
    ],
)
def test_validation_errors_name_the_body_field(
    client: TestClient[Any], body: dict[str, Any], field: str
) -> None:
    """A 400 names the offending field itself, never Litestar's ``data`` parameter."""
    answer = client.post("/realtime/sessions", json=body)
    assert answer.status_code == 400
    assert answer.headers["content-type"].startswith(PROBLEM_JSON)
    problem = msgspec.convert(answer.json(), ProblemDetails)
    assert problem.errors is not None
    assert [e.field for e in problem.errors] == [field]


@pytest.mark.parametrize(
    ("method", "path", "statuses"),
    [
        ("post", "/realtime/sessions", {400, 401, 403, 404, 413, 429, 502, 503, 504}),
        ("post", "/realtime/calls", {400, 401, 403, 404, 413, 429, 502, 503, 504}),
        ("delete", "/realtime/calls/{call_id}", {401, 403, 404}),
        ("post", "/memory/enrich", {400, 401, 403, 413, 429, 503}),
        ("get", "/readyz", {503, 504}),
    ],
)
def test_error_answers_are_declared_as_problem_json(
    schema: dict[str, Any], method: str, path: str, statuses: set[int]
) -> None:
    """Each error status a route can send is declared with the ProblemDetails body."""
    responses = schema["paths"][path][method]["responses"]
    for status in statuses:
        content = responses[str(status)]["content"]
        assert list(content) == [PROBLEM_JSON], (path, status)
        assert content[PROBLEM_JSON]["schema"]["$ref"].endswith("/ProblemDetails")


def test_the_enrich_body_is_declared_with_its_limits_for_json_and_beacons(
    schema: dict[str, Any],
) -> None:
    """The raw-body enrich route declares EnrichRequest for JSON and sendBeacon's text/plain."""
    body = schema["paths"]["/memory/enrich"]["post"]["requestBody"]
    assert body["required"] is True
    assert set(body["content"]) == {"application/json", "text/plain"}
    declared = body["content"]["application/json"]["schema"]
    expected = msgspec.json.schema(EnrichRequest)["$defs"]
    messages = declared["properties"]["messages"]
    assert messages["maxItems"] == expected["EnrichRequest"]["properties"]["messages"]["maxItems"]
    text = messages["items"]["properties"]["text"]
    assert text["maxLength"] == expected["EnrichMessage"]["properties"]["text"]["maxLength"]
    assert declared["required"] == ["session_id", "messages"]


def test_a_real_problem_answer_matches_the_declared_shape(client: TestClient[Any]) -> None:
    """An actual 401 from enrich decodes as ProblemDetails and carries WWW-Authenticate."""
    turn = {"id": "item_1", "role": "user", "text": "hello"}
    answer = client.post("/memory/enrich", json={"session_id": "vs_x", "messages": [turn]})
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"].startswith("Bearer")
    problem = msgspec.convert(answer.json(), ProblemDetails)
    assert (problem.status, problem.code) == (401, "unauthenticated")


def test_the_mint_body_is_declared_and_refuses_unknown_fields(schema: dict[str, Any]) -> None:
    """The raw-body mint route declares CreateSessionRequest with additionalProperties false."""
    body = schema["paths"]["/realtime/sessions"]["post"]["requestBody"]
    assert body["required"] is True
    declared = body["content"]["application/json"]["schema"]
    assert declared["additionalProperties"] is False
    assert declared["required"] == ["agent"]
    assert set(declared["properties"]) == {"agent", "conversation_id"}
    assert declared["properties"]["agent"]["pattern"] == "^[A-Za-z0-9_-]+$"


def test_every_declared_request_body_refuses_unknown_fields(schema: dict[str, Any]) -> None:
    """Each object of each request body says additionalProperties false, as the server does."""

    def objects(node: dict[str, Any]) -> list[dict[str, Any]]:
        if "$ref" in node:
            node = schema["components"]["schemas"][node["$ref"].rsplit("/", 1)[-1]]
        found = [node] if node.get("type") == "object" else []
        for child in node.get("properties", {}).values():
            found += objects(child)
        if "items" in node:
            found += objects(node["items"])
        for alternative in node.get("anyOf", []) + node.get("oneOf", []):
            found += objects(alternative)
        return found

    bodies = [
        media["schema"]
        for path in schema["paths"].values()
        for operation in path.values()
        for media in operation.get("requestBody", {}).get("content", {}).values()
    ]
    assert len(bodies) == 4  # mint, call (JSON), enrich (JSON and text/plain)
    for body in bodies:
        for node in objects(body):
            assert node.get("additionalProperties") is False, node.get("title")


def test_the_enrich_text_declares_that_nul_is_refused(schema: dict[str, Any]) -> None:
    """The turn text's schema carries the no-U+0000 pattern the server enforces."""
    body = schema["paths"]["/memory/enrich"]["post"]["requestBody"]["content"]["text/plain"]
    text = body["schema"]["properties"]["messages"]["items"]["properties"]["text"]
    assert text["pattern"] == "^[^\\u0000]*$"


def test_metrics_are_declared_as_the_prometheus_text_they_are(
    client: TestClient[Any], schema: dict[str, Any]
) -> None:
    """/metrics is declared with exactly the text content type it is served with, not JSON."""
    content = schema["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    served = client.get("/metrics")
    assert served.status_code == 200
    assert list(content) == [served.headers["content-type"]]
    assert served.headers["content-type"].startswith("text/plain")
    assert content[served.headers["content-type"]]["schema"]["type"] == "string"
    assert "# TYPE" in served.text
