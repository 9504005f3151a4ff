"""Allow ``python -m engram_voice``."""

from engram_voice.cli import main

raise SystemExit(main())
