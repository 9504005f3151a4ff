"""Keep WebRTC (aiortc/aioice) ICE candidates on 127.0.0.1, scoped to the code that asks.

aioice 0.13 gathers host candidates from ``aioice.ice.get_host_addresses`` and always
leaves out loopback addresses; aiortc exposes no option to choose the addresses. The
emulator must only ever listen on loopback, so this module wraps that one module-level
function once, and the wrapper changes behaviour only inside :func:`loopback_ice` (a
context variable, so it applies to the current task and the tasks it starts, never to
other code in the process). Outside that block aioice behaves exactly as shipped.

Browsers offer every host address they have (with ``--allow-loopback-in-peer-connection``
also 127.0.0.1 and ::1); :func:`loopback_candidates_only` drops the others from an offer,
so every ICE check stays between loopback addresses.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from contextvars import ContextVar

import aioice.ice

from engram_voice.netutil import is_loopback_host

__all__ = ["LOOPBACK_ADDRESS", "loopback_candidates_only", "loopback_ice"]

LOOPBACK_ADDRESS = "127.0.0.1"
_ACTIVE: ContextVar[bool] = ContextVar("engram_voice_loopback_ice", default=False)
_MARK = "__engram_voice_loopback__"
_install_lock = threading.Lock()


def _install() -> None:
    with _install_lock:
        shipped: Callable[..., list[str]] = aioice.ice.get_host_addresses
        if getattr(shipped, _MARK, False):
            return

        def get_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
            if _ACTIVE.get():
                return [LOOPBACK_ADDRESS] if use_ipv4 else []
            return shipped(use_ipv4=use_ipv4, use_ipv6=use_ipv6)

        setattr(get_host_addresses, _MARK, True)
        aioice.ice.get_host_addresses = get_host_addresses


@contextlib.contextmanager
def loopback_ice() -> Iterator[None]:
    """Within this block, ICE gathering by aiortc offers only a 127.0.0.1 host candidate."""
    _install()
    token = _ACTIVE.set(True)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def loopback_candidates_only(sdp: str) -> tuple[str, int]:
    """Return ``sdp`` without ICE candidates on non-loopback addresses, and how many went."""
    kept: list[str] = []
    dropped = 0
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            fields = line.split()
            if len(fields) < 5 or not is_loopback_host(fields[4]):  # noqa: PLR2004 - RFC 8839 field 5
                dropped += 1
                continue
        kept.append(line)
    return "\r\n".join(kept) + "\r\n", dropped
