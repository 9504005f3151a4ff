"""The ``engram-voice`` command: serve, emulator and the operator tools.

Every command reads its settings through :func:`engram_voice.settings.load_settings`
(the shared :class:`~engram_voice.settings.ProcessSettings` for bind address and logging
included) and configures logging from them, so each fails alike on bad configuration:
one message on stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

import structlog

from engram_voice.errors import ConfigurationError
from engram_voice.logs import configure_logging

__all__ = ["main"]

_logger = structlog.get_logger("engram_voice.cli")


def _serve(_: argparse.Namespace) -> int:
    import uvicorn  # noqa: PLC0415 - only the server pays for the import

    from engram_voice.settings import Settings  # noqa: PLC0415

    settings = Settings.from_env(os.environ)  # the agent catalog is loaded here too
    server = settings.server
    configure_logging(level=server.log_level, json=server.log_json)
    _logger.info("app.listening", url=f"http://{server.host}:{server.port}", workers=server.workers)
    uvicorn.run(
        "engram_voice.app:create_app_from_env",
        factory=True,
        host=server.host,
        port=server.port,
        workers=server.workers,
        log_config=None,
        access_log=False,
        proxy_headers=True,
        timeout_graceful_shutdown=20,
    )
    return 0


_EMULATOR_EXTRA = ("aiortc", "aioice", "av", "pylibsrtp", "pyee", "google_crc32c")


def _emulator(_: argparse.Namespace) -> int:
    try:
        from engram_voice.emulator import EmulatorConfig, run_emulator  # noqa: PLC0415
    except ModuleNotFoundError as exc:
        if (exc.name or "").partition(".")[0] not in _EMULATOR_EXTRA:
            raise
        raise ConfigurationError(
            f"the emulator needs the optional 'emulator' dependencies ({exc.name} is not "
            "installed): pip install 'engram-voice[emulator]' (make install does)"
        ) from exc
    from engram_voice.settings import ProcessSettings, load_settings  # noqa: PLC0415

    process, config = load_settings(
        os.environ,
        lambda r: (
            ProcessSettings.from_env(r, default_port=8600, local_tool=True),
            EmulatorConfig.from_env(r),
        ),
    )
    configure_logging(level=process.log_level, json=process.log_json)
    run_emulator(config, host=process.host, port=process.port)
    return 0


def _worker(_: argparse.Namespace) -> int:
    from engram_voice.memory.cli import worker_main  # noqa: PLC0415

    return worker_main()


def _dead_letters(args: argparse.Namespace) -> int:
    from engram_voice.memory.cli import dead_letters_main  # noqa: PLC0415

    return dead_letters_main(args.rest)


def _usage(args: argparse.Namespace) -> int:
    from engram_voice.usage.cli import usage_main  # noqa: PLC0415

    return usage_main(args)


def _zep_standin(_: argparse.Namespace) -> int:
    from engram_voice.zep_standin.runner import main as standin_main  # noqa: PLC0415

    return standin_main()


def _check(args: argparse.Namespace) -> int:
    import asyncio  # noqa: PLC0415 - only the check pays for the imports

    from engram_voice.envreader import EnvReader  # noqa: PLC0415
    from engram_voice.realtime.check import run_check  # noqa: PLC0415
    from engram_voice.realtime.settings import RealtimeSettings  # noqa: PLC0415
    from engram_voice.settings import (  # noqa: PLC0415
        ProcessSettings,
        check_agents_file,
        load_settings,
    )

    def read(reader: EnvReader) -> tuple[ProcessSettings, RealtimeSettings]:
        process, realtime = ProcessSettings.from_env(reader), RealtimeSettings.from_env(reader)
        check_agents_file(reader, realtime)
        return process, realtime

    process, settings = load_settings(os.environ, read)
    # The report is the output; log events only with --verbose, in the configured format.
    configure_logging(level="DEBUG" if args.verbose else "CRITICAL", json=process.log_json)
    return asyncio.run(run_check(settings, out=sys.stdout))


def _dev(args: argparse.Namespace) -> int:
    from engram_voice.devstack import run_dev_stack  # noqa: PLC0415

    return run_dev_stack(os.environ, port=args.port)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="engram-voice",
        description="Voice backend for Engram agents. Configuration comes from the environment "
        "(see docs/configuration.md).",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = commands.add_parser("serve", help="run the HTTP service (default)")
    serve.set_defaults(handler=_serve)
    emulator = commands.add_parser(
        "emulator", help="run the local Azure OpenAI realtime emulator (GA paths, real WebRTC)"
    )
    emulator.set_defaults(handler=_emulator)
    worker = commands.add_parser("worker", help="run the memory delivery worker as its own process")
    worker.set_defaults(handler=_worker)
    memory = commands.add_parser("memory", help="memory operator tools")
    memory_commands = memory.add_subparsers(dest="memory_command", required=True)
    dead = memory_commands.add_parser(
        "dead-letters",
        help="list or replay undeliverable transcript batches (list [--json] | replay [ids])",
        add_help=False,
    )
    dead.add_argument("rest", nargs=argparse.REMAINDER)
    dead.set_defaults(handler=_dead_letters)
    usage = commands.add_parser(
        "usage",
        help="list usage per user and UTC day: calls, minutes, tokens by kind (table or --json)",
    )
    from engram_voice.usage.cli import add_arguments  # noqa: PLC0415 - the options live with the command

    add_arguments(usage)
    usage.set_defaults(handler=_usage)
    standin = commands.add_parser(
        "zep-standin", help="run the local Zep stand-in (the /api/v2 and /api/v4 subsets, SQLite)"
    )
    standin.set_defaults(handler=_zep_standin)
    check = commands.add_parser(
        "check",
        help="verify each configured upstream: mint on Azure OpenAI, open the Voice Live "
        "control channel (exit 0 = OK)",
        description="For each configured upstream resolve its credential (API key, Key Vault "
        "or Entra ID) and prove it: mint one ephemeral key per Azure OpenAI endpoint; open "
        "Azure AI Voice Live's control channel and offer the agent's session without placing "
        "a call. Says what was used and what happened; never prints a secret. Exit codes: 0 "
        "OK, 2 invalid configuration, 3 credential unavailable, 4 credential refused "
        "(401/403), 5 request rejected (404 deployment, api-version or resource, 400), 6 "
        "Azure unreachable/timed out/throttled/failed.",
    )
    check.add_argument(
        "--verbose", action="store_true", help="also show the service's log events (stderr)"
    )
    check.set_defaults(handler=_check)
    dev = commands.add_parser(
        "dev", help="run the local stack: emulator, Zep stand-in and service (make run)"
    )
    dev.add_argument("--port", type=int, default=None, help="the service's port (default: PORT)")
    dev.set_defaults(handler=_dev)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command named in ``argv`` and return its exit status."""
    parser = _parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:2] == ["memory", "dead-letters"]:  # its own parser owns every flag after it
        args = argparse.Namespace(handler=_dead_letters, rest=argv[2:])
    else:
        args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = getattr(args, "handler", _serve)
    try:
        return handler(args)
    except ConfigurationError as exc:
        print(f"engram-voice: {exc}", file=sys.stderr)  # noqa: T201 - the operator's one clear message
        return 2
    except KeyboardInterrupt:
        return 130
