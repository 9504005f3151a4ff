"""Serve the demo web client (built into ``static/app`` by ``make web``) in local mode."""

from engram_voice.web.routes import web_routes

__all__ = ["web_routes"]
