"""Injected faults: error statuses for the next N requests or until cleared, latency, hangs.

Faults are set per target (``client_secrets``, ``calls`` or ``voicelive``) through ``POST
/_emulator/faults`` or :meth:`FaultInjector.apply`. The Voice Live control channel takes
one ``mode`` at a time (see :class:`~engram_voice.emulator.schemas.FaultRequest`), spent
by the connections it applies to. A hung request waits until the faults
are cleared or the emulator shuts down, and never longer than :data:`HANG_LIMIT_SECONDS`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Literal, cast

import msgspec
import structlog
from msgspec import UNSET

from engram_voice.emulator.azure_errors import AzureApiError, injected_error
from engram_voice.emulator.schemas import FaultRequest, SidebandFaultMode, VoiceLiveFaultMode

__all__ = ["HANG_LIMIT_SECONDS", "FaultInjector", "Target", "VoiceLiveFault"]

HANG_LIMIT_SECONDS = 120.0
Target = Literal["client_secrets", "calls"]
_logger = structlog.get_logger("engram_voice.emulator")


class _Faults(msgspec.Struct, kw_only=True):
    status: int | None = None
    remaining: int | None = None
    retry_after: int | None = None
    latency_ms: int = 0
    hang: bool = False


class VoiceLiveFault(msgspec.Struct, kw_only=True):
    """The fault the Voice Live control channel plays, for ``remaining`` connections."""

    mode: VoiceLiveFaultMode | None = None
    code: str | None = None
    latency_ms: int = 0
    remaining: int | None = None


class FaultInjector:
    """Holds the faults per target and applies them to requests."""

    def __init__(self, *, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self._sleep = sleep
        self._faults: dict[Target, _Faults] = {"client_secrets": _Faults(), "calls": _Faults()}
        self.voicelive = VoiceLiveFault()
        self.sideband: SidebandFaultMode | None = None
        self.sideband_remaining: int | None = None
        self.sideband_latency_ms = 0
        self._release = asyncio.Event()
        self.hung = 0

    def apply(self, change: FaultRequest) -> dict[str, Any]:
        """Apply ``change`` and return every target's faults as they now stand."""
        if change.clear:
            self.clear()
        if change.target == "voicelive":
            self._apply_voicelive(change)
            return self.describe()
        if change.target == "sideband":
            self._apply_sideband(change)
            return self.describe()
        if change.mode is not UNSET or change.code is not None:
            raise AzureApiError.bad_param(
                "mode", "'mode' and 'code' are faults of the 'voicelive' target only."
            )
        faults = self._faults[change.target]
        if change.status is not UNSET:
            faults.status = change.status
            faults.remaining = change.count if change.status is not None else None
            faults.retry_after = change.retry_after
        if change.latency_ms is not UNSET:
            faults.latency_ms = change.latency_ms
        if change.hang is not UNSET:
            if change.hang and not faults.hang:
                self._release = asyncio.Event()
            faults.hang = change.hang
            if not change.hang:
                self._release_if_unhung()
        _logger.info("emulator.faults_set", target=change.target, **self.describe()[change.target])
        return self.describe()

    def clear(self) -> None:
        """Remove every fault and release every hung request."""
        for target in self._faults:
            self._faults[target] = _Faults()
        self.voicelive = VoiceLiveFault()
        self.sideband = self.sideband_remaining = None
        self.sideband_latency_ms = 0
        self._release.set()

    def _apply_sideband(self, change: FaultRequest) -> None:
        if change.mode is UNSET:
            return
        if change.mode not in ("refuse", "drop", "late", None):
            raise AzureApiError.bad_param(
                "mode", "The sideband's faults are 'refuse', 'drop' and 'late'."
            )
        self.sideband = change.mode
        self.sideband_latency_ms = change.latency_ms if change.latency_ms is not UNSET else 0
        self.sideband_remaining = change.count if change.mode is not None else None
        _logger.info("emulator.faults_set", target="sideband", mode=self.sideband)

    def take_sideband(self, mode: SidebandFaultMode) -> bool:
        """Return True (counting it down) when the sideband fault ``mode`` is set."""
        if self.sideband != mode:
            return False
        if self.sideband_remaining is not None:
            self.sideband_remaining -= 1
            if self.sideband_remaining <= 0:
                self.sideband = self.sideband_remaining = None
        _logger.info("emulator.sideband_fault_played", mode=mode)
        return True

    def take_voicelive(self, *modes: VoiceLiveFaultMode) -> VoiceLiveFault | None:
        """Return the Voice Live fault if its mode is one of ``modes``, counting it down."""
        fault = self.voicelive
        if fault.mode is None or fault.mode not in modes:
            return None
        taken = VoiceLiveFault(mode=fault.mode, code=fault.code, latency_ms=fault.latency_ms)
        if fault.remaining is not None:
            fault.remaining -= 1
            if fault.remaining <= 0:
                self.voicelive = VoiceLiveFault()
        _logger.info("emulator.voicelive_fault_played", mode=taken.mode)
        return taken

    def _apply_voicelive(self, change: FaultRequest) -> None:
        if change.mode in ("refuse", "drop", "late"):
            raise AzureApiError.bad_param("mode", "Not a fault of the 'voicelive' target.")
        if change.mode is not UNSET:
            self.voicelive = VoiceLiveFault(
                mode=cast("VoiceLiveFaultMode | None", change.mode),
                code=change.code,
                latency_ms=change.latency_ms if change.latency_ms is not UNSET else 0,
                remaining=change.count if change.mode is not None else None,
            )
        elif change.latency_ms is not UNSET:
            self.voicelive.latency_ms = change.latency_ms
        _logger.info("emulator.faults_set", target="voicelive", mode=self.voicelive.mode)

    async def delay(self, target: Target, base_latency_ms: int = 0) -> None:
        """Wait for the configured plus injected latency, and through a hang if one is set."""
        faults = self._faults[target]
        latency = base_latency_ms + faults.latency_ms
        if latency > 0:
            await self._sleep(latency / 1000)
        if faults.hang:
            release = self._release
            self.hung += 1
            try:
                await asyncio.wait_for(release.wait(), HANG_LIMIT_SECONDS)
            except TimeoutError:
                _logger.warning("emulator.hang_limit_reached", target=target)
            finally:
                self.hung -= 1

    def fail(self, target: Target) -> None:
        """Raise the injected error status for ``target`` if one is due, counting it down."""
        faults = self._faults[target]
        if faults.status is None:
            return
        status, retry_after = faults.status, faults.retry_after
        if faults.remaining is not None:
            faults.remaining -= 1
            if faults.remaining <= 0:
                faults.status = faults.remaining = faults.retry_after = None
        raise injected_error(status, retry_after)

    def describe(self) -> dict[str, Any]:
        """Return the faults per target and the number of requests hanging right now."""
        described: dict[str, Any] = {
            target: msgspec.to_builtins(faults) for target, faults in self._faults.items()
        }
        described["voicelive"] = msgspec.to_builtins(self.voicelive)
        described["sideband"] = {
            "mode": self.sideband,
            "remaining": self.sideband_remaining,
            "latency_ms": self.sideband_latency_ms,
        }
        described["hung_requests"] = self.hung
        return described

    def _release_if_unhung(self) -> None:
        if not any(f.hang for f in self._faults.values()):
            self._release.set()
