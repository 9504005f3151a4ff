import asyncio

import aioice.ice

from engram_voice.emulator import loopback_ice
from engram_voice.emulator.loopback import LOOPBACK_ADDRESS, loopback_candidates_only

OFFER = "\r\n".join(
    [
        "v=0",
        "m=audio 9 UDP/TLS/RTP/SAVPF 111",
        "a=candidate:1 1 udp 2122194687 127.0.0.1 39113 typ host generation 0",
        "a=candidate:2 1 udp 2122063615 192.0.2.2 49616 typ host generation 0",
        "a=candidate:3 1 udp 2122267903 ::1 35501 typ host generation 0",
        "a=candidate:4 1 udp 2122134271 fd00::2 54345 typ host generation 0",
        "a=candidate:5 1 udp 2122134271 0c8f1e2a-7d1b-4a8e-9f1a-2b3c4d5e6f70.local 5000 typ host",
        "a=candidate:6 1 udp",
        "a=end-of-candidates",
        "",
    ]
)


def test_inside_the_block_only_loopback_is_gathered():
    """Within loopback_ice, aioice's host addresses are exactly 127.0.0.1."""
    with loopback_ice():
        inside = aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=True)
        without_ipv4 = aioice.ice.get_host_addresses(use_ipv4=False, use_ipv6=True)

    assert inside == [LOOPBACK_ADDRESS]
    assert without_ipv4 == []


def test_outside_the_block_aioice_is_unchanged():
    """Outside loopback_ice, aioice gathers as shipped (it never offers 127.0.0.1 itself)."""
    with loopback_ice():
        pass

    outside = aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=True)

    assert LOOPBACK_ADDRESS not in outside


async def test_the_block_covers_tasks_it_starts_and_no_others():
    """Tasks started inside the block see loopback; a task started before it does not."""
    gate = asyncio.Event()

    async def gather_later() -> list[str]:
        await gate.wait()
        return aioice.ice.get_host_addresses(use_ipv4=True, use_ipv6=False)

    outsider = asyncio.create_task(gather_later())
    with loopback_ice():
        insider = asyncio.create_task(gather_later())
    gate.set()

    assert await asyncio.wait_for(insider, 5) == [LOOPBACK_ADDRESS]
    assert LOOPBACK_ADDRESS not in await asyncio.wait_for(outsider, 5)


def test_non_loopback_candidates_are_dropped_from_an_offer():
    """Only 127.0.0.1 and ::1 candidates survive; other lines are kept as they were."""
    filtered, dropped = loopback_candidates_only(OFFER)

    candidates = [line for line in filtered.splitlines() if line.startswith("a=candidate:")]
    assert dropped == 4
    assert [c.split()[4] for c in candidates] == ["127.0.0.1", "::1"]
    assert filtered.startswith("v=0\r\nm=audio")
    assert "a=end-of-candidates\r\n" in filtered
