"""The `imagine` command line: `generate`, `db upgrade|downgrade`, `run`.

Each subcommand imports what it needs only when it runs, so `imagine generate` and
`imagine db` never import discord and `imagine --help` is instant.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from bot import __version__
from bot.config import ConfigError, Settings, load_settings


def _add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        "-c",
        type=Path,
        default=None,
        help="TOML configuration file (see config.example.toml); "
        "IMAGINE_<SECTION>__<KEY> environment variables override it",
    )


def build_parser() -> argparse.ArgumentParser:
    from generation.cli import add_generate_arguments

    parser = argparse.ArgumentParser(
        prog="imagine",
        description="Self-hosted Midjourney-style text-to-image for Discord, "
        "running Stable Diffusion in-process.",
    )
    parser.add_argument("--version", action="version", version=f"imagine {__version__}")
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    gen = sub.add_parser(
        "generate",
        help="make a grid of images from a prompt on the command line",
        description="Generate images from PROMPT and write them as one grid image.",
    )
    _add_config_argument(gen)
    add_generate_arguments(gen)

    db = sub.add_parser("db", help="create or migrate the database", description="Database schema.")
    _add_config_argument(db)
    db_sub = db.add_subparsers(dest="db_command", metavar="ACTION", required=True)
    up = db_sub.add_parser("upgrade", help="apply migrations up to REVISION (default: head)")
    up.add_argument("revision", nargs="?", default="head")
    down = db_sub.add_parser("downgrade", help="revert migrations down to REVISION (default: base)")
    down.add_argument("revision", nargs="?", default="base")

    run = sub.add_parser(
        "run",
        help="run the Discord bot",
        description="Connect to Discord and serve /imagine and the admin commands.",
    )
    _add_config_argument(run)
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    return load_settings(args.config)


def _run_db(args: argparse.Namespace, settings: Settings) -> int:
    from bot.db.session import downgrade, upgrade

    url = settings.database.url
    if args.db_command == "upgrade":
        asyncio.run(upgrade(url, args.revision))
        print(f"database at {_redact(url)} upgraded to {args.revision}")
    else:
        asyncio.run(downgrade(url, args.revision))
        print(f"database at {_redact(url)} downgraded to {args.revision}")
    return 0


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    # Alembic announces each of its plugins at INFO; only the migrations themselves matter.
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    try:
        settings = _settings(args)
    except ConfigError as exc:
        print(f"imagine: {exc}", file=sys.stderr)
        return 2

    if args.command == "generate":
        from generation.cli import run_generate

        return run_generate(args, settings.model, settings.generation)
    if args.command == "db":
        return _run_db(args, settings)
    if args.command == "run":
        from bot.app import run

        return run(settings)
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
