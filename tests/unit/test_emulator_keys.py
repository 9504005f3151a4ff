import random
import sys

import pytest

import engram_voice.emulator.keys as keys_module
from engram_voice.credentials.secret import Secret
from engram_voice.emulator.azure_errors import AzureApiError
from engram_voice.emulator.keys import KEEP_EXPIRED_SECONDS, MAX_KEYS, EphemeralKeyStore, KeyRing
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
    assert counts == {"issued": 50, "used": 1, "expired_unused": 49, "evicted": 0}
    assert first not in repr(store.__dict__)


def _code(store: EphemeralKeyStore, value: str) -> str:
    """Return the error code ``check`` answers for ``value``, or "ok"."""
    try:
        store.check(value)
    except AzureApiError as exc:
        return exc.code
    return "ok"


def test_a_flood_of_mints_keeps_the_store_bounded(clock):
    """However many keys are minted, the store never holds more than its bound."""
    store = EphemeralKeyStore(clock, max_keys=100)

    for _ in range(1_000):
        store.issue({}, 7200)

    counts = store.counts()
    assert len(store) == counts["issued"] == 100
    assert counts["evicted"] == 900


def test_the_default_bound_holds_at_ten_thousand(clock):
    """With the default bound a flood of long-lived keys stops growing at ``MAX_KEYS``."""
    store = EphemeralKeyStore(clock)

    for _ in range(MAX_KEYS + 500):
        store.issue({}, 7200)

    assert len(store) == MAX_KEYS


def test_keys_expired_for_an_hour_are_evicted(store, clock):
    """An expired key is still recognised for an hour, then forgotten (unknown)."""
    value, key = store.issue({}, 60)

    clock.now = key.expires_at + KEEP_EXPIRED_SECONDS
    store.issue({}, 60)
    assert _code(store, value) == "ephemeral_token_expired"
    clock.now += 1
    store.issue({}, 60)

    assert _code(store, value) == "invalid_api_key"
    assert store.counts()["evicted"] == 1


def test_keys_of_different_lifetimes_are_evicted_by_expiry_not_age(store, clock):
    """A short key minted after a long one is forgotten first: eviction follows expiry."""
    long_value, _ = store.issue({}, 7200)
    short_value, short = store.issue({}, 10)

    clock.now = short.expires_at + KEEP_EXPIRED_SECONDS + 1
    store.issue({}, 60)

    assert _code(store, short_value) == "invalid_api_key"
    assert _code(store, long_value) == "ok"


def test_a_full_store_makes_room_with_the_longest_expired_key_first(clock):
    """When full, an expired key goes before any live one, and live keys stay usable."""
    store = EphemeralKeyStore(clock, max_keys=3)
    old_value, old = store.issue({}, 10)
    live = [store.issue({}, 7200)[0] for _ in range(2)]
    clock.now = old.expires_at

    store.issue({}, 7200)

    assert _code(store, old_value) == "invalid_api_key"
    assert [_code(store, value) for value in live] == ["ok", "ok"]


def test_a_used_key_answers_already_used_while_it_is_retained(clock):
    """A redeemed key keeps answering ``ephemeral_token_already_used`` through a flood."""
    store = EphemeralKeyStore(clock, max_keys=50)
    value, _ = store.issue({}, 7200)
    store.redeem(value, "rtc_1")
    clock.now += 1

    for _ in range(48):
        store.issue({}, 7200)

    assert _code(store, value) == "ephemeral_token_already_used"
    assert store.counts() == {"issued": 49, "used": 1, "expired_unused": 0, "evicted": 0}


@pytest.mark.parametrize("seed", range(40))
def test_counts_match_a_full_recount_after_any_history(seed):
    """After a random run of mints, redemptions and clock moves, counts equal a recount.

    A key counts as expired from the latest time the store has seen when minting or
    counting (a clock stepping back revives no count, though ``check`` follows the clock).
    """
    rng = random.Random(seed)
    clock = FakeClock()
    store = EphemeralKeyStore(clock, max_keys=20, keep_expired_seconds=600)
    issued: list[tuple[str, keys_module.EphemeralKey]] = []
    latest = clock.now

    for _ in range(rng.randint(0, 120)):
        action = rng.choice(["issue", "issue", "redeem", "tick", "back"])
        if action == "issue":
            issued.append(store.issue({}, rng.choice([10, 60, rng.randint(10, 7200)])))
            latest = max(latest, clock.now)
        elif action == "redeem" and issued:
            value, _ = rng.choice(issued)
            if _code(store, value) == "ok":
                store.redeem(value, "rtc")
        elif action == "tick":
            clock.now += rng.choice([1, 10, 60, 700, rng.randint(1, 8000)])
        elif action == "back":  # the wall clock may step back a little
            clock.now -= rng.randint(1, 30)

    counts = store.counts()
    latest = max(latest, clock.now)
    retained = [key for value, key in issued if _code(store, value) != "invalid_api_key"]
    assert counts["issued"] == len(retained) == len(store) <= 20
    assert counts["used"] == sum(1 for k in retained if k.used_by is not None)
    assert counts["expired_unused"] == sum(
        1 for k in retained if k.used_by is None and latest >= k.expires_at
    )
    assert counts["evicted"] == len(issued) - len(retained)


def _lines_run_in_keys_module(action) -> int:
    """Return how many lines of keys.py ``action()`` executes (a cost measure, not a timing)."""
    filename = keys_module.__file__
    lines = 0

    def tracer(frame, event, _arg):
        nonlocal lines
        if frame.f_code.co_filename != filename:
            return None
        if event == "line":
            lines += 1
        return tracer

    previous = sys.gettrace()
    sys.settrace(tracer)
    try:
        action()
    finally:
        sys.settrace(previous)
    return lines


@pytest.mark.parametrize("stored", [10, 1_000, MAX_KEYS])
@pytest.mark.parametrize("state", ["live", "expired", "used"])
def test_a_mint_costs_the_same_however_many_keys_are_stored(clock, stored, state):
    """The lines of key-store code one mint (or a count) runs do not grow with stored keys."""
    store = EphemeralKeyStore(clock)
    values = [store.issue({}, 60 if state == "expired" else 7200)[0] for _ in range(stored)]
    if state == "used":
        for value in values:
            store.redeem(value, "rtc")
    clock.now += 61
    store.issue({}, 7200)  # moves every key that expired: paid once per key, not per mint

    per_mint = _lines_run_in_keys_module(lambda: store.issue({}, 7200))
    per_count = _lines_run_in_keys_module(store.counts)

    assert per_mint <= 40
    assert per_count <= 20
