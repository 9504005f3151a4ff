"""engram-voice: realtime credential vending and durable memory enrichment for Engram agents."""

__all__ = ["__version__"]

__version__ = "0.1.0"
