"""`python -m bot ...`: the same as the `imagine` command."""

from bot.cli import main

raise SystemExit(main())
