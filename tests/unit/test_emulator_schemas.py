import msgspec
import pytest
from openai.types.realtime import RealtimeSessionCreateResponse

from engram_voice.agents import load_catalog
from engram_voice.emulator.azure_errors import AzureApiError
from engram_voice.emulator.minting import checked_session, session_object
from engram_voice.emulator.schemas import ClientSecretRequest, FaultRequest, decode_strict
from engram_voice.realtime.session_config import client_secret_request
from tests.support.openai_contract import validate_client_secret_params, validate_model
from tests.support.realtime_client import mint_body

DEPLOYMENTS = ("gpt-realtime",)


def refused(body: object, deployments: tuple[str, ...] = DEPLOYMENTS) -> AzureApiError:
    """Return the error the emulator raises for ``body``."""
    raw = body if isinstance(body, bytes) else msgspec.json.encode(body)
    with pytest.raises(AzureApiError) as caught:
        checked_session(decode_strict(raw, ClientSecretRequest), deployments)
    return caught.value


def accepted(body: dict) -> dict:
    """Return the session the emulator answers for an accepted ``body``."""
    request = decode_strict(msgspec.json.encode(body), ClientSecretRequest)
    return session_object(checked_session(request, DEPLOYMENTS), "sess_test")


def with_session(**changes: object) -> dict:
    """Return the standard mint body with ``changes`` applied to its session."""
    body = mint_body()
    body["session"].update(changes)
    return body


def test_the_test_body_is_a_valid_sdk_request():
    """The body the tests mint with is a ClientSecretCreateParams with nothing undeclared."""
    validate_client_secret_params(mint_body())


@pytest.mark.parametrize("agent", load_catalog().all(), ids=lambda a: a.id)
def test_the_services_payload_for_every_agent_is_accepted(agent):
    """What the service sends for each catalog agent is valid for the SDK and the emulator."""
    body = client_secret_request(agent, deployment="gpt-realtime", ttl_seconds=60)

    validate_client_secret_params(body)
    session = accepted(body)

    assert session["instructions"] == agent.instructions
    assert session["audio"]["output"]["voice"] == agent.voice


def test_the_answered_session_matches_the_sdk_model():
    """The answered session is a RealtimeSessionCreateResponse with nothing undeclared."""
    session = accepted(mint_body())

    parsed = validate_model(RealtimeSessionCreateResponse, session)

    assert parsed.id == "sess_test"
    assert parsed.object == "realtime.session"
    assert parsed.audio.output.voice == "marin"
    assert parsed.audio.input.transcription.model == "gpt-4o-mini-transcribe"
    assert parsed.audio.input.turn_detection.silence_duration_ms == 500


def test_defaults_fill_a_minimal_session():
    """A session with only type and model is answered with Azure's defaults filled in."""
    session = accepted({"session": {"type": "realtime", "model": "gpt-realtime"}})

    validate_model(RealtimeSessionCreateResponse, session)
    assert session["audio"]["output"]["voice"] == "alloy"
    assert session["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}
    assert session["audio"]["input"]["turn_detection"]["type"] == "server_vad"
    assert session["output_modalities"] == ["audio"]


def test_other_formats_and_turn_detection_are_echoed():
    """G.711 formats, semantic VAD and disabled turn detection come back as requested."""
    body = mint_body()
    body["session"]["audio"]["input"]["format"] = {"type": "audio/pcmu"}
    body["session"]["audio"]["input"]["turn_detection"] = {
        "type": "semantic_vad",
        "eagerness": "low",
    }
    semantic = accepted(body)
    body["session"]["audio"]["input"]["turn_detection"] = None
    disabled = accepted(body)

    validate_model(RealtimeSessionCreateResponse, semantic)
    assert semantic["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert semantic["audio"]["input"]["turn_detection"]["eagerness"] == "low"
    assert disabled["audio"]["input"]["turn_detection"] is None


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        (with_session(colour="blue"), "session.colour", "unknown_parameter"),
        ({"session": {"model": "gpt-realtime"}}, "session.type", "missing_required_parameter"),
        ({"session": {"type": "realtime"}}, "session.model", "missing_required_parameter"),
        (with_session(type="transcription"), "session.type", "invalid_value"),
        (
            {**mint_body(), "expires_after": {"seconds": 9}},
            "expires_after.seconds",
            "invalid_value",
        ),
        (
            {**mint_body(), "expires_after": {"seconds": 7201}},
            "expires_after.seconds",
            "invalid_value",
        ),
        (
            {**mint_body(), "expires_after": {"anchor": "now", "seconds": 60}},
            "expires_after.anchor",
            "invalid_value",
        ),
        (
            with_session(audio={"output": {"voice": "nova"}}),
            "session.audio.output.voice",
            "invalid_value",
        ),
        (
            with_session(audio={"input": {"turn_detection": {"type": "push_to_talk"}}}),
            "session.audio.input.turn_detection.type",
            "invalid_value",
        ),
        (with_session(instructions=42), "session.instructions", "invalid_value"),
        (
            with_session(output_modalities=["text", "audio"]),
            "session.output_modalities",
            "invalid_value",
        ),
        ({}, "session", "missing_required_parameter"),
    ],
)
def test_invalid_requests_are_refused_naming_the_parameter(body, param, code):
    """Each invalid body gets Azure's 400 with the offending parameter's dotted path."""
    error = refused(body)

    assert error.status == 400
    assert error.param == param
    assert error.code == code
    assert param in error.message
    assert set(error.body()["error"]) == {"code", "message", "type", "param"}


def test_an_unknown_deployment_is_not_found():
    """A model that is not a deployment of this resource gets Azure's 404 DeploymentNotFound."""
    error = refused(with_session(model="gpt-5-realtime"))

    assert error.status == 404
    assert error.code == "DeploymentNotFound"


@pytest.mark.parametrize("raw", [b"{", b"[1, 2]", b""])
def test_a_body_that_is_not_a_json_object_is_refused(raw):
    """Broken JSON or a non-object body is a 400 before any field is looked at."""
    with pytest.raises(AzureApiError) as caught:
        decode_strict(raw, ClientSecretRequest)

    assert caught.value.status == 400
    assert caught.value.code in {"invalid_json", "invalid_type"}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b'{"status": 200}', "status"),
        (b'{"status": 500, "times": 2}', "times"),
        (b'{"target": "hangup", "status": 500}', "target"),
        (b'{"latency_ms": -5}', "latency_ms"),
    ],
)
def test_fault_requests_are_strict(body, param):
    """A fault request with an unknown field or an out-of-range value is refused by name."""
    with pytest.raises(AzureApiError) as caught:
        decode_strict(body, FaultRequest)

    assert caught.value.param == param
