"""The `imagine` command line: `generate`, `bench`, `db upgrade|downgrade`, `run`, `worker`,
`completion`.

Each subcommand imports what it needs only when it runs, so `imagine generate` and
`imagine db` never import discord, `imagine --help` is instant, and `imagine run` reports a
missing token or an impossible device before torch and diffusers are imported.

`--config`, `-v/--verbose` and `-q/--quiet` are accepted anywhere: before or after the
subcommand (`imagine db upgrade --config x.toml` and `imagine --config x.toml db upgrade`).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bot import __version__
from bot.config import (
    CONFIG_ENV,
    DEFAULT_CONFIG_NAME,
    ConfigError,
    Settings,
    find_config_file,
    load_settings,
    sqlite_path,
    unknown_environment_variables,
)

log = logging.getLogger(__name__)


def _add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Options every (sub)command takes; SUPPRESS so a later parser never resets them."""
    parser.add_argument(
        "--config",
        "-c",
        type=Path,
        default=argparse.SUPPRESS,
        metavar="FILE",
        help=f"TOML configuration file (default: ./{DEFAULT_CONFIG_NAME}, else ${CONFIG_ENV}); "
        "IMAGINE_<SECTION>__<KEY> environment variables override it",
    )
    parser.add_argument(
        "--verbose",
        "-v",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show all log messages (debug)",
    )
    parser.add_argument(
        "--quiet",
        "-q",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show errors only",
    )


def _command(sub: Any, name: str, **kwargs: str) -> argparse.ArgumentParser:
    """A subcommand parser that takes the common options too."""
    parser: argparse.ArgumentParser = sub.add_parser(name, **kwargs)
    _add_common_arguments(parser)
    return parser


def build_parser() -> argparse.ArgumentParser:
    from generation.bench import add_bench_arguments
    from generation.cli import add_generate_arguments

    parser = argparse.ArgumentParser(
        prog="imagine",
        description="Self-hosted Midjourney-style text-to-image for Discord, "
        "running Stable Diffusion in-process.",
    )
    parser.add_argument("--version", action="version", version=f"imagine {__version__}")
    _add_common_arguments(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    gen = _command(
        sub,
        "generate",
        help="make a grid of images from a prompt on the command line",
        description="Generate images from PROMPT and write them as one grid image "
        "(PNG files carry the parameters in the text chunk other Stable Diffusion tools read).",
    )
    add_generate_arguments(gen)

    bench = _command(
        sub,
        "bench",
        help="measure throughput, latency and fairness against the seed article's path",
        description="Simulated members through the real backend, and the seed article's path "
        "on the same model, in one run (see generation/bench.py).",
    )
    add_bench_arguments(bench)

    db = _command(sub, "db", help="create or migrate the database", description="Database schema.")
    db_sub = db.add_subparsers(dest="db_command", metavar="ACTION")
    up = _command(
        db_sub,
        "upgrade",
        help="apply migrations up to REVISION (default: head)",
        description="Apply migrations up to REVISION (default: head). Concurrent upgrades "
        "wait for each other.",
    )
    up.add_argument("revision", nargs="?", default="head")
    down = _command(
        db_sub,
        "downgrade",
        help="revert migrations down to REVISION (required; 'base' drops every table)",
        description="Revert migrations down to REVISION. A SQLite database file is backed up "
        "first. 'base' drops every table and needs --yes.",
    )
    down.add_argument("revision", help="target revision, e.g. 0001, -1, or base")
    down.add_argument(
        "--yes", action="store_true", help="confirm a downgrade to base (drops every table)"
    )

    _command(
        sub,
        "run",
        help="run the Discord bot",
        description="Connect to Discord and serve /imagine and the admin commands.",
    )

    worker = _command(
        sub,
        "worker",
        help="run one GPU worker of the pool (generation.backend = \"pool\")",
        description=textwrap.fill(
            "Serve the GPU worker pool: load the model once on DEVICE, then take fair batches "
            "of /imagine jobs from the PostgreSQL queue ([pool] / database.url), run them and "
            "hand the images back. Start one per GPU, on any machine that reaches the "
            "database; stop with Ctrl-C or SIGTERM (the running batch finishes first). A "
            "worker killed mid-job is noticed after pool.stalled_after_seconds and its jobs "
            "run again on another worker from the same seeds.",
            width=78,
        ),
        epilog=(
            "examples:\n"
            "  imagine worker --config config.toml --device cuda:0\n"
            "  CUDA_VISIBLE_DEVICES=1 imagine worker -c config.toml --device cuda\n"
            "  imagine worker -c config.toml --model builtin:tiny-random --device cpu  # test"
        ),
    )
    worker.formatter_class = argparse.RawDescriptionHelpFormatter
    worker.add_argument(
        "--device",
        default=None,
        help="accelerator to run on: cuda:N, cuda, mps, cpu or auto (default: model.device)",
    )
    worker.add_argument(
        "--model",
        default=None,
        help="model id or folder (default: model.id); must match the bot's model.id",
    )
    worker.add_argument(
        "--no-warmup",
        action="store_true",
        help="skip the small warm-up generation at start (default: generation.warmup)",
    )

    completion = sub.add_parser(
        "completion",
        help="print a shell completion script (bash, zsh or tcsh)",
        description="Print the completion script for SHELL, generated from this command "
        "line's own parser by shtab, so it always matches the installed version.",
        epilog="install, e.g.:\n"
        '  bash: echo \'eval "$(imagine completion bash)"\' >> ~/.bashrc\n'
        "  zsh:  echo 'eval \"$(imagine completion zsh)\"' >> ~/.zshrc  # after compinit\n"
        "  tcsh: echo 'eval `imagine completion tcsh`' >> ~/.tcshrc",
    )
    completion.formatter_class = argparse.RawDescriptionHelpFormatter
    completion.add_argument(
        "shell", choices=COMPLETION_SHELLS, metavar="SHELL", help="bash, zsh or tcsh"
    )
    return parser


#: Shells `imagine completion` writes scripts for (those shtab supports, fish and PowerShell
#: aside: its fish/PowerShell output lacks subcommand-specific options).
COMPLETION_SHELLS = ("bash", "zsh", "tcsh")


def completion_script(parser: argparse.ArgumentParser, shell: str) -> str:
    """The completion script for `shell`, generated by shtab from `parser` (file names are
    completed after the options that take a path)."""
    import shtab

    for action in _actions(parser):
        if action.metavar in ("FILE", "PATH"):
            action.complete = shtab.FILE  # type: ignore[attr-defined]
    return shtab.complete(parser, shell=shell)


def _actions(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """Every action of `parser` and of its subcommands' parsers, recursively."""
    found = list(parser._actions)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                found += _actions(child)
    return found


def _option(args: argparse.Namespace, name: str, default: object = None) -> object:
    return getattr(args, name, default)


def _load(args: argparse.Namespace, announce: bool) -> Settings:
    """Find and load the configuration; say which file (unless -q) and warn about typos."""
    for warning in unknown_environment_variables():
        print(f"imagine: warning: {warning}", file=sys.stderr)
    path = find_config_file(_option(args, "config"))  # type: ignore[arg-type]
    settings = load_settings(path)
    if announce:
        if path is not None:
            print(f"imagine: configuration from {path}", file=sys.stderr)
        else:
            print(
                f"imagine: no configuration file (./{DEFAULT_CONFIG_NAME} or ${CONFIG_ENV}); "
                "using defaults and the environment",
                file=sys.stderr,
            )
    return settings


def _run_worker(
    args: argparse.Namespace, settings: Settings, *, verbose: bool, quiet: bool
) -> int:
    from bot.lifecycle import StartupError, pool_config
    from bot.logs import configure_bot_logging

    # A service, like the bot: structured log lines, start-up stages among them.
    configure_bot_logging(settings.log.format, settings.log.level, verbose=verbose, quiet=quiet)
    model = settings.model
    if settings.generation.backend != "pool":
        # Bots with this configuration generate in their own process: no job would come.
        print(
            'imagine worker: warning: generation.backend is "local" in this configuration, '
            'so bots using it send no jobs to workers; set backend = "pool" for them',
            file=sys.stderr,
        )
    try:
        config = pool_config(settings)
    except StartupError as exc:
        print(f"imagine: {exc}", file=sys.stderr)
        return 2
    from generation.fastpath import FastPath
    from generation.pool.runner import run_worker
    from generation.progress import startup_stages

    return run_worker(
        config,
        settings.generation.limits(),
        model_id=args.model or model.id,
        variant=model.variant,
        device=args.device or model.device,
        safety_checker=model.safety_checker,
        cache_dir=model.cache_dir,
        warmup=settings.generation.warmup and not args.no_warmup,
        fast=FastPath.configured(settings.generation),
        stages=startup_stages(),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    verbose, quiet = bool(_option(args, "verbose")), bool(_option(args, "quiet"))
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "db" and args.db_command is None:
        parser.parse_args(["db", "--help"])
        return 0
    if args.command == "completion":
        # Before logging and the configuration: the script is all this prints.
        sys.stdout.write(completion_script(parser, args.shell))
        return 0
    if args.command not in ("run", "worker"):  # those two log as services do
        from bot.logs import configure_cli_logging

        configure_cli_logging(verbose=verbose, quiet=quiet)
    try:
        settings = _load(args, announce=not quiet)
    except ConfigError as exc:
        print(f"imagine: {exc}", file=sys.stderr)
        return 2

    if args.command == "generate":
        from generation.cli import run_generate

        return run_generate(args, settings.model, settings.generation)
    if args.command == "bench":
        from generation.bench import run_bench

        # Its defaults are a random-weight model's: a configuration file's model replaces them.
        if find_config_file(_option(args, "config")) is None:  # type: ignore[arg-type]
            return run_bench(args)
        return run_bench(args, settings.model, settings.generation)
    if args.command == "db":
        return _run_db(args, settings)
    if args.command == "worker":
        return _run_worker(args, settings, verbose=verbose, quiet=quiet)
    return _run_bot(settings, verbose=verbose, quiet=quiet)


def _run_db(args: argparse.Namespace, settings: Settings) -> int:
    from bot.db.guard import DatabaseSetupError, backup_sqlite, check_url, explain, redact_url

    url = settings.database.url
    shown = redact_url(url)
    try:
        check_url(url)
        if args.db_command == "upgrade":
            from bot.db.session import upgrade

            asyncio.run(upgrade(url, args.revision))
            print(f"database at {shown} upgraded to {args.revision}")
            return 0
        if args.revision == "base" and not args.yes:
            print(
                "imagine: refusing to downgrade to base: it drops every table and all history, "
                "quotas and settings. Add --yes if that is what you want.",
                file=sys.stderr,
            )
            return 2
        db_file = sqlite_path(url)
        if db_file is not None:
            backup = backup_sqlite(db_file)
            if backup is not None:
                print(f"backed up {db_file} to {backup}")
        from bot.db.session import downgrade

        asyncio.run(downgrade(url, args.revision))
        print(f"database at {shown} downgraded to {args.revision}")
        return 0
    except DatabaseSetupError as exc:
        print(f"imagine: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        log.debug("database command failed", exc_info=True)
        print(f"imagine: {explain(exc, url)}", file=sys.stderr)
        return 1


def _run_bot(settings: Settings, *, verbose: bool, quiet: bool) -> int:
    from bot.db.guard import redact_url
    from bot.logs import configure_bot_logging

    configure_bot_logging(settings.log.format, settings.log.level, verbose=verbose, quiet=quiet)
    # Cheap checks first: none of them needs torch, diffusers or discord.
    problem = _preflight(settings)
    if problem is not None:
        print(f"imagine: {problem}", file=sys.stderr)
        return 2
    log.info(
        "starting",
        extra={
            "database": redact_url(settings.database.url),
            "images_dir": str(settings.storage.images_dir),
            "model": settings.model.id,
        },
    )
    from bot.app import run

    return run(settings)


def _preflight(settings: Settings) -> str | None:
    from bot.db.guard import DatabaseSetupError, check_url
    from generation.preflight import check_device, check_model_available, unwritable_folder

    if settings.discord.token is None:
        return (
            "no Discord bot token: set discord.token in the config file or the "
            "DISCORD_TOKEN environment variable"
        )
    try:
        check_url(settings.database.url)
    except DatabaseSetupError as exc:
        return str(exc)
    images_dir = settings.storage.images_dir
    # Else a bot starts whose every job fails when its images are stored.
    reason = unwritable_folder(images_dir)
    if reason is not None:
        return (
            f"cannot write to storage.images_dir = {images_dir}: {reason}; choose a folder "
            "the bot may write"
        )
    return check_device(settings.model.device) or check_model_available(
        settings.model.id, settings.model.variant, settings.model.cache_dir
    )


if __name__ == "__main__":
    raise SystemExit(main())
