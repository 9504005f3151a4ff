"""``python -m engram_voice.zep_standin``: the local Zep stand-in (same as the command)."""

from engram_voice.cli import main

raise SystemExit(main(["zep-standin"]))
