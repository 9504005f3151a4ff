"""``python -m engram_voice.memory worker | dead-letters list|replay [ids]``."""

import sys

from engram_voice.errors import ConfigurationError
from engram_voice.memory.cli import dead_letters_main, worker_main

_USAGE = "usage: python -m engram_voice.memory worker | dead-letters (list|replay [ids])"


def _main(argv: list[str]) -> int:
    if argv[:1] == ["worker"]:
        return worker_main()
    if argv[:1] == ["dead-letters"]:
        return dead_letters_main(argv[1:])
    sys.stderr.write(_USAGE + "\n")
    return 2


try:
    sys.exit(_main(sys.argv[1:]))
except ConfigurationError as exc:
    sys.exit(f"engram-voice memory: {exc}")
