"""Run the Zep stand-in with uvicorn (``engram-voice zep-standin`` and ``python -m``)."""

from __future__ import annotations

import os
from collections.abc import Mapping

import structlog
import uvicorn

from engram_voice.envreader import EnvReader
from engram_voice.zep_standin.app import create_standin_app
from engram_voice.zep_standin.config import ZepStandinConfig

__all__ = ["main", "run_zep_standin"]

_logger = structlog.get_logger("engram_voice.zep_standin")


def run_zep_standin(config: ZepStandinConfig, *, host: str, port: int) -> None:
    """Serve the stand-in on ``host:port`` until interrupted (SIGTERM/SIGINT)."""
    _logger.info("zep_standin.listening", url=f"http://{host}:{port}", db=config.db_path)
    uvicorn.run(
        create_standin_app(config),
        host=host,
        port=port,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=5,
    )


def main(env: Mapping[str, str] | None = None) -> int:
    """Read HOST, PORT and ``ZEP_STANDIN_*`` from the environment and serve."""
    from engram_voice.logs import configure_logging  # noqa: PLC0415

    reader = EnvReader(os.environ if env is None else env)
    host = reader.text("HOST", "127.0.0.1")
    port = reader.integer("PORT", 8700, minimum=1, maximum=65535)
    config = ZepStandinConfig.from_env(reader)
    reader.raise_if_invalid()
    configure_logging(level=reader.text("LOG_LEVEL", "info"), json=False)
    run_zep_standin(config, host=host, port=port)
    return 0
