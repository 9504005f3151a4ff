"""A local Zep stand-in: the ``/api/v2`` (zep-python) and ``/api/v4`` (zep-cloud) subsets."""

from engram_voice.zep_standin.app import Standin, create_standin_app
from engram_voice.zep_standin.config import ZepStandinConfig
from engram_voice.zep_standin.faults import FaultPlan, Faults
from engram_voice.zep_standin.runner import main, run_zep_standin
from engram_voice.zep_standin.store import StandinStore, ZepRuleError
from engram_voice.zep_standin.v4_store import V4Store

__all__ = [
    "FaultPlan",
    "Faults",
    "Standin",
    "StandinStore",
    "V4Store",
    "ZepRuleError",
    "ZepStandinConfig",
    "create_standin_app",
    "main",
    "run_zep_standin",
]
