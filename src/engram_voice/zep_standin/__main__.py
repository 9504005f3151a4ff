"""``python -m engram_voice.zep_standin``: the local Zep stand-in."""

import sys

from engram_voice.errors import ConfigurationError
from engram_voice.zep_standin.runner import main

try:
    sys.exit(main())
except ConfigurationError as exc:
    sys.exit(f"zep-standin: {exc}")
