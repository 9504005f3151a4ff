import pytest

from engram_voice.emulator import EmulatorConfig
from engram_voice.envreader import EnvReader
from engram_voice.errors import ConfigurationError

KEY1 = "k1-" + "a" * 29
KEY2 = "k2-" + "b" * 29


def read(env: dict[str, str]) -> EmulatorConfig:
    """Read the emulator settings from ``env`` as start-up does."""
    reader = EnvReader(env)
    config = EmulatorConfig.from_env(reader)
    reader.raise_if_invalid()
    return config


def test_two_keys_and_defaults():
    """With only the two keys set, the emulator serves gpt-realtime every 3 s for 20 turns."""
    config = read({"EMULATOR_API_KEYS": f"{KEY1},{KEY2}"})

    assert [k.reveal() for k in config.api_keys] == [KEY1, KEY2]
    assert config.bearer_tokens == ()
    assert config.deployments == ("gpt-realtime",)
    assert config.latency_ms == 0
    assert config.turn_interval_seconds == 3.0
    assert config.max_turns == 20
    assert config.public_url is None


def test_every_setting_is_read():
    """Bearer tokens, deployments, latency, pacing and the public URL come from EMULATOR_*."""
    config = read(
        {
            "EMULATOR_API_KEYS": f" {KEY1} , {KEY2} ",
            "EMULATOR_BEARER_TOKENS": "tok-one,tok-two",
            "EMULATOR_DEPLOYMENTS": "gpt-realtime,gpt-realtime-mini",
            "EMULATOR_LATENCY_MS": "250",
            "EMULATOR_TURN_INTERVAL_SECONDS": "0.5",
            "EMULATOR_MAX_TURNS": "4",
            "EMULATOR_PUBLIC_URL": "http://127.0.0.1:8600/",
        }
    )

    assert [t.reveal() for t in config.bearer_tokens] == ["tok-one", "tok-two"]
    assert config.deployments == ("gpt-realtime", "gpt-realtime-mini")
    assert config.latency_ms == 250
    assert config.turn_interval_seconds == 0.5
    assert config.max_turns == 4
    assert config.public_url == "http://127.0.0.1:8600"


@pytest.mark.parametrize("keys", [None, "", KEY1, f"{KEY1},{KEY2},{KEY1}x"])
def test_exactly_two_keys_are_required(keys):
    """Without exactly two keys (Azure's key1 and key2) start-up fails naming the variable."""
    env = {} if keys is None else {"EMULATOR_API_KEYS": keys}

    with pytest.raises(ConfigurationError, match="EMULATOR_API_KEYS is required"):
        read(env)


@pytest.mark.parametrize("keys", ["short,alsoshort", f"{KEY1},{KEY1}"])
def test_keys_must_be_long_and_different(keys):
    """Short keys or the same key twice are refused: no guessable or duplicate slots."""
    with pytest.raises(ConfigurationError, match="two different keys"):
        read({"EMULATOR_API_KEYS": keys})


def test_every_problem_is_reported_at_once():
    """Out-of-range numbers and a bad URL are listed together in one message."""
    with pytest.raises(ConfigurationError) as caught:
        read(
            {
                "EMULATOR_API_KEYS": f"{KEY1},{KEY2}",
                "EMULATOR_LATENCY_MS": "-1",
                "EMULATOR_TURN_INTERVAL_SECONDS": "0",
                "EMULATOR_MAX_TURNS": "many",
                "EMULATOR_PUBLIC_URL": "ftp://example",
            }
        )

    message = str(caught.value)
    for name in (
        "EMULATOR_LATENCY_MS",
        "EMULATOR_TURN_INTERVAL_SECONDS",
        "EMULATOR_MAX_TURNS",
        "EMULATOR_PUBLIC_URL",
    ):
        assert name in message


def test_repr_never_shows_a_key():
    """Printing the configuration (e.g. in a traceback) never reveals keys or tokens."""
    config = read({"EMULATOR_API_KEYS": f"{KEY1},{KEY2}", "EMULATOR_BEARER_TOKENS": "tok-secret"})

    text = repr(config)

    assert KEY1 not in text
    assert KEY2 not in text
    assert "tok-secret" not in text


@pytest.mark.parametrize(
    ("value", "media"),
    [(None, True), ("on", True), ("true", True), ("off", False), ("0", False), ("no", False)],
)
def test_emulator_media_switch(value, media):
    """EMULATOR_MEDIA defaults to on; off/false/0/no turns the aiortc peers off."""
    env = {"EMULATOR_API_KEYS": f"{KEY1},{KEY2}"}
    if value is not None:
        env["EMULATOR_MEDIA"] = value
    assert read(env).media is media


def test_emulator_media_must_be_a_boolean():
    """A value of EMULATOR_MEDIA that is not a boolean is refused at start-up."""
    with pytest.raises(ConfigurationError, match="EMULATOR_MEDIA"):
        read({"EMULATOR_API_KEYS": f"{KEY1},{KEY2}", "EMULATOR_MEDIA": "sometimes"})
