"""Recall at call start: what Zep knows about a user reaches the agent's session as data."""

from engram_voice.memory.recall.block import MEMORY_GUIDANCE, memory_block, with_memory
from engram_voice.memory.recall.factory import build_reader, build_recall
from engram_voice.memory.recall.reader import MemoryReader, RecallError
from engram_voice.memory.recall.service import LiveSession, MemoryRecall, Recalled
from engram_voice.memory.recall.settings import RecallSettings

__all__ = [
    "MEMORY_GUIDANCE",
    "LiveSession",
    "MemoryReader",
    "MemoryRecall",
    "RecallError",
    "RecallSettings",
    "Recalled",
    "build_reader",
    "build_recall",
    "memory_block",
    "with_memory",
]
