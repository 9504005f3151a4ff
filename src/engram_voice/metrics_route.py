"""``GET /metrics``: Litestar's Prometheus controller, declared as what it serves.

Litestar's own controller is documented in the OpenAPI schema as ``application/json``
with no schema, but it answers the Prometheus text exposition format. This subclass
serves the same bytes and declares ``text/plain`` with a string body.
"""

from __future__ import annotations

from litestar import Response, get
from litestar.plugins.prometheus import PrometheusController
from prometheus_client import CONTENT_TYPE_LATEST

__all__ = ["MetricsController"]


class MetricsController(PrometheusController):
    """Prometheus metrics in the text exposition format (``text/plain``)."""

    @get(
        media_type=CONTENT_TYPE_LATEST,  # exactly the Content-Type the parent sends
        summary="Prometheus metrics (text exposition format)",
        response_description="The metrics in the Prometheus text format",
        tags=["health"],
    )
    async def get(self) -> Response[bytes]:
        """Return every registered metric in the Prometheus text exposition format."""
        answer: Response[bytes] = await super().get.fn(self)
        return answer
