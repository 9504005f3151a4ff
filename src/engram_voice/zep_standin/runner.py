"""Run the Zep stand-in with uvicorn (``engram-voice zep-standin`` and ``python -m``)."""

from __future__ import annotations

import os
from collections.abc import Mapping

import structlog
import uvicorn

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
    """Read the process settings and ``ZEP_STANDIN_*`` (checked, exit 2 when bad) and serve."""
    from engram_voice.logs import configure_logging  # noqa: PLC0415
    from engram_voice.settings import ProcessSettings, load_settings  # noqa: PLC0415

    process, config = load_settings(
        os.environ if env is None else env,
        lambda r: (
            ProcessSettings.from_env(r, default_port=8700, local_tool=True),
            ZepStandinConfig.from_env(r),
        ),
    )
    configure_logging(level=process.log_level, json=process.log_json)
    run_zep_standin(config, host=process.host, port=process.port)
    return 0
