"""Usage metering: calls, seconds and tokens per call and per user and day; daily limits."""

from engram_voice.usage.meter import UsageMeter, seconds_until_utc_midnight
from engram_voice.usage.records import TOKEN_KINDS, DailyUsage, tokens_from_usage, utc_day
from engram_voice.usage.settings import UsageSettings
from engram_voice.usage.sqlite_store import SqliteUsageStore
from engram_voice.usage.store import MemoryUsageStore, UsageStore

__all__ = [
    "TOKEN_KINDS",
    "DailyUsage",
    "MemoryUsageStore",
    "SqliteUsageStore",
    "UsageMeter",
    "UsageSettings",
    "UsageStore",
    "seconds_until_utc_midnight",
    "tokens_from_usage",
    "utc_day",
]
