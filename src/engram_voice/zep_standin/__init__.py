"""A local Zep stand-in: the ``/api/v2`` subset zep-python uses, persisted in SQLite."""

from engram_voice.zep_standin.app import Standin, create_standin_app
from engram_voice.zep_standin.config import ZepStandinConfig
from engram_voice.zep_standin.faults import FaultPlan, Faults
from engram_voice.zep_standin.runner import main, run_zep_standin
from engram_voice.zep_standin.store import StandinStore, ZepRuleError

__all__ = [
    "FaultPlan",
    "Faults",
    "Standin",
    "StandinStore",
    "ZepRuleError",
    "ZepStandinConfig",
    "create_standin_app",
    "main",
    "run_zep_standin",
]
