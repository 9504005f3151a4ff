"""``python -m engram_voice.memory worker | dead-letters list|replay [ids]``.

The same commands as ``engram-voice worker`` and ``engram-voice memory dead-letters``,
through the same entry point (checked settings, exit 2 on bad configuration).
"""

import sys

from engram_voice.cli import main

_USAGE = "usage: python -m engram_voice.memory worker | dead-letters (list|replay [ids])"


def _main(argv: list[str]) -> int:
    if argv[:1] == ["worker"]:
        return main(["worker"])
    if argv[:1] == ["dead-letters"]:
        return main(["memory", *argv])
    sys.stderr.write(_USAGE + "\n")
    return 2


sys.exit(_main(sys.argv[1:]))
