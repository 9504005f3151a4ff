"""Liveness, readiness and the operator status page."""

from engram_voice.health.routes import healthz, readyz, status

__all__ = ["healthz", "readyz", "status"]
