import pytest

from engram_voice.emulator.events import WEBRTC_FILTERED_EVENTS, EventFactory, new_id
from engram_voice.emulator.sideband import SidebandConnection
from tests.support.openai_contract import SERVER_EVENT_MODELS, validate_server_event

SESSION = {
    "type": "realtime",
    "object": "realtime.session",
    "id": "sess_1",
    "model": "gpt-realtime",
    "instructions": "You are Elena.",
    "expires_at": 0,
}


def every_event() -> list[dict]:
    """Return one event from every builder of the factory."""
    events = EventFactory("conv_1")
    user = EventFactory.user_item("item_u")
    assistant = EventFactory.assistant_item("item_a")
    done = EventFactory.assistant_item("item_a", "Hi, this is Elena.")
    return [
        events.session_created(SESSION),
        events.session_updated(SESSION),
        events.error("Client event is not valid JSON.", "invalid_json", None),
        events.speech_started("item_u", 100),
        events.speech_stopped("item_u", 1600),
        events.committed("item_u", None),
        events.item_added(user, None),
        events.item_done(user, None),
        events.response_created("resp_1", "marin"),
        events.item_added(assistant, "item_u"),
        events.output_audio_started("resp_1"),
        events.transcription_completed("item_u", "Hi Elena, can you hear me?"),
        events.transcript_delta("resp_1", "item_a", "Hi, this "),
        events.transcript_done("resp_1", "item_a", "Hi, this is Elena."),
        events.item_done(done, "item_u"),
        events.response_done("resp_1", "marin", done),
        events.output_audio_stopped("resp_1"),
    ]


@pytest.mark.parametrize("event", every_event(), ids=lambda e: e["type"])
def test_every_event_matches_the_sdk_model(event):
    """Each event the emulator can send validates against the SDK with no undeclared field."""
    # The SDK types session.created/updated with the request-shaped session, which lacks the
    # id, object and expires_at that the GA server sends in those events.
    allowed = ("session.id", "session.object", "session.expires_at")
    validate_server_event(
        event, allow_extra=allowed if event["type"].startswith("session.") else ()
    )


def test_the_webrtc_filter_lets_through_what_azure_documents():
    """With webrtcfilter=on only the documented events reach the browser, all known to the SDK."""
    documented = {
        "input_audio_buffer.speech_started",
        "input_audio_buffer.speech_stopped",
        "output_audio_buffer.started",
        "output_audio_buffer.stopped",
        "conversation.item.input_audio_transcription.completed",
        "conversation.item.added",
        "conversation.item.created",
        "response.output_text.delta",
        "response.output_text.done",
        "response.output_audio_transcript.delta",
        "response.output_audio_transcript.done",
    }

    assert documented == WEBRTC_FILTERED_EVENTS
    assert documented <= set(SERVER_EVENT_MODELS)


def test_event_ids_are_unique():
    """Every event and every generated id is distinct."""
    events = every_event()
    ids = {new_id("item") for _ in range(1000)}

    assert len({e["event_id"] for e in events}) == len(events)
    assert len(ids) == 1000


@pytest.mark.parametrize("words", [1, 2, 7, 40])
def test_response_done_carries_sdk_valid_usage_that_grows_with_the_conversation(words):
    """GA response.done has a complete, consistent usage; later responses count more input."""
    events = EventFactory("conv_1")
    done = EventFactory.assistant_item("item_a", " ".join(["word"] * words))
    first = events.response_done("resp_1", "marin", done)
    second = events.response_done("resp_2", "marin", done)
    for event in (first, second):
        validate_server_event(event)
        usage = event["response"]["usage"]
        inputs, outputs = usage["input_token_details"], usage["output_token_details"]
        assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
        assert usage["input_tokens"] == inputs["text_tokens"] + inputs["audio_tokens"]
        assert usage["output_tokens"] == outputs["text_tokens"] + outputs["audio_tokens"]
        assert 0 <= inputs["cached_tokens"] <= usage["input_tokens"]
        assert outputs["text_tokens"] == words
    assert second["response"]["usage"]["input_tokens"] > first["response"]["usage"]["input_tokens"]


def test_voice_live_response_done_has_no_usage():
    """Voice Live's beta response.done keeps usage null (its channel is not metered here)."""
    from engram_voice.emulator.events import VOICE_LIVE_EVENTS  # noqa: PLC0415

    events = EventFactory("conv_1", VOICE_LIVE_EVENTS)
    done = EventFactory.assistant_item("item_a", "hello", "audio")
    assert events.response_done("resp_1", "en-US-Ava", done)["response"]["usage"] is None


@pytest.mark.parametrize(
    ("event_type", "queued"),
    [
        ("session.created", False),
        ("session.updated", True),
        ("response.done", True),
        ("conversation.item.input_audio_transcription.completed", True),
    ],
)
async def test_a_sideband_gets_every_server_event_but_the_browsers_greeting(
    event_type: str, queued: bool
) -> None:
    """Whenever it joined, a sideband never receives session.created, and receives the rest."""
    connection = SidebandConnection(None, None, "key1", drop=False)  # type: ignore[arg-type]
    connection.observe({"type": event_type})
    assert (not connection._queue.empty()) is queued
