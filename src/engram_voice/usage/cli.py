"""``engram-voice usage``: usage per user and UTC day from durable storage (table or JSON)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Mapping
from datetime import date
from pathlib import Path
from typing import TextIO

from engram_voice.logs import configure_logging
from engram_voice.memory.queue import QueueUnavailableError
from engram_voice.settings import ProcessSettings, load_settings
from engram_voice.usage.factory import build_usage_store
from engram_voice.usage.records import TOKEN_KINDS, DailyUsage
from engram_voice.usage.settings import UsageSettings
from engram_voice.usage.sqlite_store import SqliteUsageStore

__all__ = ["add_arguments", "usage_main"]


def _day(value: str) -> str:
    """Accept a UTC day written ``YYYY-MM-DD``."""
    try:
        return date.fromisoformat(value).isoformat()
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a day (YYYY-MM-DD)") from None


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declare the command's options on ``parser``."""
    parser.add_argument("--user", default=None, help="only this user id")
    parser.add_argument("--since", type=_day, default=None, help="first UTC day (YYYY-MM-DD)")
    parser.add_argument("--until", type=_day, default=None, help="last UTC day (YYYY-MM-DD)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _table(rows: list[DailyUsage], out: TextIO) -> None:
    header = ("day", "user", "calls", "minutes", *TOKEN_KINDS)
    lines = [header] + [
        (
            r.day,
            r.user_id,
            str(r.calls),
            f"{r.seconds / 60:.1f}",
            *(str(r.tokens[k]) for k in TOKEN_KINDS),
        )
        for r in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out.writelines(
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        + "\n"
        for line in lines
    )


async def _read_shared(settings: UsageSettings, args: argparse.Namespace) -> list[DailyUsage]:
    """Read the days from the shared (PostgreSQL) store."""
    store = build_usage_store(settings, background=False)
    await store.start()
    try:
        return await store.daily(user_id=args.user, since=args.since, until=args.until)
    finally:
        await store.close()


def usage_main(
    args: argparse.Namespace, env: Mapping[str, str] | None = None, out: TextIO | None = None
) -> int:
    """List usage per user and day from USAGE_STORE; exit 2 on bad config or days.

    Exit 1 when the PostgreSQL store cannot be reached (one attempt, bounded).
    """
    process, settings = load_settings(
        os.environ if env is None else env,
        lambda r: (ProcessSettings.from_env(r), UsageSettings.from_env(r)),
    )
    configure_logging(level="WARNING", json=process.log_json)
    out = out or sys.stdout
    if args.since and args.until and args.since > args.until:
        sys.stderr.write(
            f"engram-voice usage: --since {args.since} is after --until {args.until}\n"
        )
        return 2
    path = Path(settings.sqlite_path)
    rows: list[DailyUsage] = []
    if settings.store == "postgres":
        try:
            rows = asyncio.run(_read_shared(settings, args))
        except QueueUnavailableError as exc:  # a neutral reason, never the server's text
            sys.stderr.write(f"engram-voice usage: the usage database: {exc.reason}\n")
            return 1
    elif path.exists():
        rows = SqliteUsageStore(path).read_daily(args.user, args.since, args.until)
    else:
        sys.stderr.write(f"engram-voice usage: no usage recorded yet ({path} does not exist)\n")
    if args.json:
        out.write(json.dumps([r.as_dict() for r in rows], indent=2) + "\n")
    elif rows:
        _table(rows, out)
    else:
        out.write("no usage\n")
    return 0
