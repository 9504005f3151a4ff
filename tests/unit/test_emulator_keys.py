import pytest

from engram_voice.credentials.secret import Secret
from engram_voice.emulator.azure_errors import AzureApiError
from engram_voice.emulator.keys import EphemeralKeyStore, KeyRing
from tests.support.clock import FakeClock

KEY1, KEY2, TOKEN = "1" * 32, "2" * 32, "entra-token-abc"


@pytest.fixture(name="ring")
def fixture_ring() -> KeyRing:
    """Provide a key ring with two keys and one accepted Entra token."""
    return KeyRing((Secret(KEY1), Secret(KEY2)), (Secret(TOKEN),))


@pytest.fixture(name="clock")
def fixture_clock() -> FakeClock:
    """Provide a clock the test moves by hand."""
    return FakeClock()


@pytest.fixture(name="store")
def fixture_store(clock: FakeClock) -> EphemeralKeyStore:
    """Provide an ephemeral key store on the fake clock."""
    return EphemeralKeyStore(clock)


@pytest.mark.parametrize(
    ("headers", "slot"),
    [
        ({"api-key": KEY1}, "key1"),
        ({"api-key": KEY2}, "key2"),
        ({"authorization": f"Bearer {TOKEN}"}, "bearer"),
        ({"authorization": f"bearer {TOKEN}"}, "bearer"),
    ],
)
def test_each_credential_reports_its_slot(ring, headers, slot):
    """Key 1, key 2 and an accepted Entra token each authenticate and name their slot."""
    assert ring.authenticate(headers) == slot


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"api-key": "3" * 32},
        {"api-key": ""},
        {"authorization": "Bearer not-accepted"},
        {"authorization": "Basic abc"},
        {"authorization": "Bearer ek_abcdefgh"},
        {"api-key": "wrong", "authorization": f"Bearer {TOKEN}"},
    ],
)
def test_missing_or_wrong_credentials_get_401(ring, headers):
    """No credential, a wrong key, an unknown token or an ephemeral key is Azure's 401."""
    with pytest.raises(AzureApiError) as caught:
        ring.authenticate(headers)

    assert caught.value.status == 401
    assert set(caught.value.body()["error"]) == {"code", "message", "type", "param"}


def test_regenerating_a_slot_replaces_only_that_key(ring):
    """A regenerated key 1 works, the old key 1 is refused, and key 2 keeps working."""
    new_key = ring.regenerate(1)

    assert new_key != KEY1
    assert len(new_key) == 32
    assert ring.authenticate({"api-key": new_key}) == "key1"
    assert ring.authenticate({"api-key": KEY2}) == "key2"
    with pytest.raises(AzureApiError):
        ring.authenticate({"api-key": KEY1})
    assert ring.regenerations == {1: 1, 2: 0}


@pytest.mark.parametrize("slot", [0, 3])
def test_only_slots_one_and_two_exist(ring, slot):
    """Azure resources have key 1 and key 2; any other slot is a 400 naming ``slot``."""
    with pytest.raises(AzureApiError) as caught:
        ring.regenerate(slot)

    assert caught.value.param == "slot"


def test_a_minted_key_is_usable_once(store):
    """An ephemeral key checks out until it is redeemed, then it is already used."""
    value, key = store.issue({"id": "sess_1"}, 60)

    assert value.startswith("ek_")
    assert store.check(value) is key
    store.redeem(value, "rtc_1")

    with pytest.raises(AzureApiError) as caught:
        store.check(value)
    assert (caught.value.status, caught.value.code) == (401, "ephemeral_token_already_used")
    assert key.used_by == "rtc_1"


def test_a_key_expires_at_its_expiry_second(store, clock):
    """A key is valid until ``expires_at`` and refused as expired from that second on."""
    value, key = store.issue({}, 10)

    assert key.expires_at == int(clock.now) + 10
    clock.now = key.expires_at - 0.5
    store.check(value)
    clock.now = key.expires_at
    with pytest.raises(AzureApiError) as caught:
        store.check(value)
    assert (caught.value.status, caught.value.code) == (401, "ephemeral_token_expired")


@pytest.mark.parametrize("value", ["ek_never-issued-value", "sk-not-an-ephemeral-key", ""])
def test_unknown_keys_are_refused(store, value):
    """A value the store never issued is a 401, whatever its shape."""
    with pytest.raises(AzureApiError) as caught:
        store.check(value)

    assert caught.value.status == 401


def test_keys_are_distinct_and_counted_without_values(store, clock):
    """Every mint yields a new value; counts describe keys without exposing them."""
    values = {store.issue({}, 10)[0] for _ in range(50)}
    first = values.pop()
    store.redeem(first, "rtc_x")
    clock.now += 11

    counts = store.counts()

    assert len(values) == 49
    assert counts == {"issued": 50, "used": 1, "expired_unused": 49}
    assert first not in repr(store.__dict__)
