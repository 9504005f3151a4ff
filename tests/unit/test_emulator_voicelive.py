import msgspec
import pytest

from engram_voice.emulator import EmulatorConfig
from engram_voice.emulator.azure_errors import AzureApiError
from engram_voice.emulator.callmode import ga_mode, voice_live_mode
from engram_voice.emulator.events import (
    VOICE_LIVE_CHANNEL_EVENTS,
    VOICE_LIVE_EVENTS,
    WEBRTC_FILTERED_EVENTS,
    EventFactory,
)
from engram_voice.emulator.faults import FaultInjector
from engram_voice.emulator.schemas import VOICES, FaultRequest
from engram_voice.emulator.voicelive_session import (
    SessionRejectedError,
    default_session,
    merged_session,
)
from engram_voice.envreader import EnvReader

AVA = {"type": "azure-standard", "name": "en-US-Ava:DragonHDLatestNeural", "temperature": 0.8}
KEYS = "k1-" + "a" * 29 + ",k2-" + "b" * 29


def fault(**fields: object) -> FaultRequest:
    """Return a Voice Live fault change decoded like the HTTP body."""
    return msgspec.convert({"target": "voicelive", **fields}, FaultRequest)


@pytest.mark.parametrize(
    "voice",
    [
        AVA,
        {"type": "azure-standard", "name": "en-US-GuyNeural"},
        {"type": "azure-custom", "name": "mine", "endpoint_id": "e1"},
        *({"type": "openai", "name": name} for name in sorted(VOICES)),
        *sorted(VOICES),
    ],
)
def test_voices_voice_live_speaks_are_accepted(voice):
    """Azure voices with a name and every openai name in the one voice list are accepted."""
    session = merged_session(default_session("gpt-realtime", None), {"voice": voice}, started=False)

    assert session["voice"] == voice


@pytest.mark.parametrize(
    ("voice", "param"),
    [
        ({"type": "azure-standard"}, "session.voice.name"),
        ({"type": "azure-standard", "name": "  "}, "session.voice.name"),
        ({"type": "azure-personal", "name": 7}, "session.voice.name"),
        ({"type": "openai", "name": "en-US-GuyNeural"}, "session.voice.name"),
        ("en-US-GuyNeural", "session.voice.name"),
        ({"name": "marin"}, "session.voice.type"),
        ({"type": "azure-custom", "name": "mine"}, "session.voice.endpoint_id"),
        ({**AVA, "temperature": 1.5}, "session.voice.temperature"),
        ({**AVA, "temperature": True}, "session.voice.temperature"),
        (42, "session.voice"),
    ],
)
def test_voices_voice_live_cannot_speak_are_refused(voice, param):
    """A voice without a name, an unknown openai name or a bad field is refused, naming it."""
    with pytest.raises(SessionRejectedError) as refused:
        merged_session(default_session("gpt-realtime", None), {"voice": voice}, started=False)

    assert refused.value.param == param


@pytest.mark.parametrize(
    ("before", "after"),
    [(AVA, {"type": "openai", "name": "marin"}), ({"type": "openai", "name": "cedar"}, AVA)],
)
def test_a_running_call_cannot_switch_voice_provider(before, after):
    """session.update may not switch between Azure and OpenAI voices once the call runs."""
    current = merged_session(
        default_session("gpt-realtime", None), {"voice": before}, started=False
    )

    with pytest.raises(SessionRejectedError, match="Cannot update voice"):
        merged_session(current, {"voice": after}, started=True)
    assert merged_session(current, {"voice": after}, started=False)["voice"] == after


def test_an_update_keeps_the_session_identity():
    """Top-level fields are replaced, but the session id and object never change."""
    current = default_session("gpt-realtime", None)

    updated = merged_session(
        current, {"id": "sess_mine", "instructions": "You are Sage."}, started=True
    )

    assert updated["id"] == current["id"]
    assert updated["instructions"] == "You are Sage."
    assert updated["voice"] == current["voice"]


@pytest.mark.parametrize("turn_detection", [{"type": "vad"}, {}, "server_vad"])
def test_an_unknown_turn_detection_is_refused(turn_detection):
    """Turn detection must be null or one of Voice Live's types."""
    with pytest.raises(SessionRejectedError):
        merged_session(
            default_session("gpt-realtime", None), {"turn_detection": turn_detection}, started=False
        )


@pytest.mark.parametrize("update", [None, [], "voice"])
def test_a_session_must_be_an_object(update):
    """A session that is not a JSON object is refused."""
    with pytest.raises(SessionRejectedError):
        merged_session(default_session("gpt-realtime", None), update, started=False)


def test_voice_live_vocabulary_uses_the_beta_names():
    """Voice Live calls name transcripts response.audio_transcript.* and items .created."""
    events = EventFactory("conv_1", VOICE_LIVE_EVENTS)
    item = EventFactory.assistant_item("item_a", "Hi.", "audio")

    assert events.transcript_delta("resp_1", "item_a", "Hi")["type"] == (
        "response.audio_transcript.delta"
    )
    assert events.transcript_done("resp_1", "item_a", "Hi.")["type"] == (
        "response.audio_transcript.done"
    )
    assert events.item_added(item, None)["type"] == "conversation.item.created"
    assert events.item_done(item, None) is None
    response = events.response_done("resp_1", "en-US-GuyNeural", item)["response"]
    assert response["voice"] == "en-US-GuyNeural"
    assert response["output"][0]["content"][0]["type"] == "audio"


def test_call_modes_route_events():
    """GA calls filter or send everything; Voice Live splits channel and control, or mirrors."""
    assert ga_mode(filtered=False).routes("session.created") == (True, False)
    assert ga_mode(filtered=True).routes("response.created") == (False, False)
    assert all(ga_mode(filtered=True).routes(t)[0] for t in WEBRTC_FILTERED_EVENTS)
    plain, mirrored = voice_live_mode(mirror=False), voice_live_mode(mirror=True)
    assert plain.routes("response.audio_transcript.done") == (True, False)
    assert plain.routes("session.updated") == (False, True)
    assert plain.routes("error") == (False, True)
    assert plain.routes("input_audio_buffer.committed") == (False, False)
    assert all(mirrored.routes(t) == (True, True) for t in VOICE_LIVE_CHANNEL_EVENTS)
    assert plain.voice_name({"voice": AVA}) == AVA["name"]
    assert plain.voice_name({"voice": "marin"}) == "marin"


@pytest.mark.parametrize("count", [1, 2, 3])
def test_a_counted_voicelive_fault_plays_that_many_times(count):
    """A fault with count n is taken by n connections, then the channel behaves again."""
    faults = FaultInjector()
    faults.apply(fault(mode="rtc_call_error", count=count, code="agent_initialization_failed"))

    taken = [faults.take_voicelive("rtc_call_error") for _ in range(count + 2)]

    assert [t is not None for t in taken] == [True] * count + [False, False]
    assert taken[0] is not None
    assert taken[0].code == "agent_initialization_failed"
    assert faults.describe()["voicelive"]["mode"] is None


def test_a_voicelive_fault_is_taken_only_where_it_applies():
    """An upgrade fault is not spent by the signalling; it lasts until cleared without count."""
    faults = FaultInjector()
    faults.apply(fault(mode="upgrade_404"))

    assert faults.take_voicelive("rtc_call_error", "never_answer") is None
    assert all(faults.take_voicelive("upgrade_401", "upgrade_404") for _ in range(5))
    faults.apply(FaultRequest(clear=True))
    assert faults.take_voicelive("upgrade_401", "upgrade_404") is None


def test_a_fault_mode_of_none_removes_it():
    """Setting mode null removes the Voice Live fault; the other targets are untouched."""
    faults = FaultInjector()
    faults.apply(fault(mode="slow_answer", latency_ms=300))
    faults.apply(FaultRequest(target="calls", status=500))

    described = faults.apply(fault(mode=None))

    assert described["voicelive"]["mode"] is None
    assert described["calls"]["status"] == 500


@pytest.mark.parametrize("mode", ["explode", "", 3])
def test_an_unknown_voicelive_fault_mode_is_refused(mode):
    """Only the documented fault modes are accepted."""
    with pytest.raises(msgspec.ValidationError):
        fault(mode=mode)


def test_voicelive_settings_are_read():
    """The cap, the quota, the mirror switch and the call limit come from EMULATOR_*."""
    env = {
        "EMULATOR_API_KEYS": KEYS,
        "EMULATOR_VOICELIVE_MAX_SECONDS": "90",
        "EMULATOR_VOICELIVE_CONNECTIONS_PER_MINUTE": "0",
        "EMULATOR_VOICELIVE_MIRROR_EVENTS": "true",
        "EMULATOR_MAX_CALLS": "1000",
    }
    reader = EnvReader(env)
    config = EmulatorConfig.from_env(reader)
    reader.raise_if_invalid()
    defaults = EmulatorConfig.from_env(EnvReader({"EMULATOR_API_KEYS": KEYS}))

    assert (config.voicelive_max_seconds, config.voicelive_connections_per_minute) == (90.0, 0)
    assert config.voicelive_mirror_events is True
    assert (config.max_active_calls, defaults.max_active_calls) == (1000, 64)
    assert defaults.voicelive_max_seconds == 3600.0
    assert defaults.voicelive_connections_per_minute == 30
    assert defaults.voicelive_mirror_events is False


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("EMULATOR_VOICELIVE_MAX_SECONDS", "0"),
        ("EMULATOR_VOICELIVE_CONNECTIONS_PER_MINUTE", "-1"),
        ("EMULATOR_VOICELIVE_MIRROR_EVENTS", "maybe"),
        ("EMULATOR_MAX_CALLS", "0"),
    ],
)
def test_bad_voicelive_settings_are_problems(name, value):
    """Out-of-range or non-boolean Voice Live settings stop start-up."""
    reader = EnvReader({"EMULATOR_API_KEYS": KEYS, name: value})
    EmulatorConfig.from_env(reader)

    assert any(name in problem for problem in reader.problems)


@pytest.mark.parametrize("target", ["client_secrets", "calls"])
def test_voicelive_fault_fields_are_refused_on_other_targets(target):
    """A mode or code sent for an HTTP target is a 400 naming ``mode``, not silently ignored."""
    faults = FaultInjector()

    with pytest.raises(AzureApiError) as refused:
        faults.apply(msgspec.convert({"target": target, "mode": "never_answer"}, FaultRequest))

    assert refused.value.param == "mode"
