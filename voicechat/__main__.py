"""``python -m voicechat``: run the command-line interface."""

from voicechat.cli import main

raise SystemExit(main())
