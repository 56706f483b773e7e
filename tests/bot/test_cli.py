"""The `imagine` command line as an operator meets it: help, configuration discovery, options
anywhere, and the `db` commands' safety and one-line errors (real subprocesses)."""

from __future__ import annotations

import importlib.util
import shlex
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from bot.db.guard import sqlite_lock
from tests.cli_helpers import clean_environ, run_imagine, start_imagine
from tests.postgres import SUPERUSER, PostgresServer


def _tables(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return {name for (name,) in rows}


def _config(folder: Path, db: str = "data/bot.db") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "config.toml"
    path.write_text(f"[database]\nurl = 'sqlite+aiosqlite:///{db}'\n")
    return path


def test_imagine_alone_prints_the_help(tmp_path: Path) -> None:
    """No subcommand: the help, not an error line."""
    proc = run_imagine([], tmp_path)
    assert proc.returncode == 0
    assert "usage: imagine" in proc.stdout and "generate" in proc.stdout and "db" in proc.stdout


def test_config_toml_in_the_current_folder_is_found_and_named(tmp_path: Path) -> None:
    """`cp config.example.toml config.toml` then `imagine db upgrade` uses that file, says so,
    and puts a relative SQLite file next to it."""
    cfg = _config(tmp_path / "srv")
    proc = run_imagine(["db", "upgrade"], tmp_path / "srv")
    assert proc.returncode == 0, proc.stderr
    assert f"configuration from {cfg}" in proc.stderr
    assert "alembic_version" in _tables(tmp_path / "srv" / "data" / "bot.db")


def test_imagine_config_variable_and_relative_paths(tmp_path: Path) -> None:
    """Started from another folder with IMAGINE_CONFIG, the same database file is used."""
    cfg = _config(tmp_path / "srv")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = run_imagine(["db", "upgrade"], elsewhere, clean_environ(IMAGINE_CONFIG=str(cfg)))
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "srv" / "data" / "bot.db").is_file()
    assert not (elsewhere / "data").exists()
    assert str(tmp_path / "srv" / "data" / "bot.db") in proc.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["--config", "{cfg}", "db", "upgrade"],
        ["db", "--config", "{cfg}", "upgrade"],
        ["db", "upgrade", "--config", "{cfg}", "-v"],
        ["-q", "db", "upgrade", "-c", "{cfg}"],
    ],
)
def test_global_options_before_or_after_the_subcommand(tmp_path: Path, args: list[str]) -> None:
    """--config, -v and -q work wherever they are written."""
    cfg = _config(tmp_path / "srv")
    proc = run_imagine([a.format(cfg=cfg) for a in args], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "srv" / "data" / "bot.db").is_file()
    assert ("configuration from" in proc.stderr) is ("-q" not in args)


def test_configuration_errors_are_lines_not_tracebacks(tmp_path: Path) -> None:
    """A bad file gives exit 2 and one line per problem; a misspelt variable is warned about."""
    (tmp_path / "config.toml").write_text("[generation]\nwidth = 500\nstepz = 1\n")
    proc = run_imagine(["db", "upgrade"], tmp_path, clean_environ(IMAGINE_MODELS__ID="x"))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "IMAGINE_MODELS__ID is ignored (did you mean IMAGINE_MODEL__ID?)" in proc.stderr
    assert "generation.width = 500: must be a multiple of 8" in proc.stderr
    assert "unknown key generation.stepz (did you mean steps?)" in proc.stderr


def test_a_folder_given_as_the_config_is_called_a_folder(tmp_path: Path) -> None:
    """`--config somefolder` (or $IMAGINE_CONFIG naming one) says it is a folder, not "not
    found", and points at the config.toml inside when there is one; exit 2, one line."""
    folder = tmp_path / "conf"
    folder.mkdir()
    proc = run_imagine(["db", "upgrade", "--config", str(folder)], tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"imagine: config path {folder} is a folder; a TOML file is expected"
    )
    _config(folder)
    proc = run_imagine(["db", "upgrade"], tmp_path, clean_environ(IMAGINE_CONFIG=str(folder)))
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"imagine: config path {folder} is a folder; a TOML file is expected "
        f"(did you mean {folder / 'config.toml'}?) (from IMAGINE_CONFIG)"
    )


_MISSING_DRIVERS = [
    url
    for url, module in (
        ("postgresql+asyncpg://u:p@127.0.0.1:9/db", "asyncpg"),
        ("mysql+aiomysql://u:p@127.0.0.1:9/db", "aiomysql"),
    )
    if importlib.util.find_spec(module) is None
]


def _installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


#: Nothing listens on port 9 of 127.0.0.1: PostgreSQL URLs whose driver is installed, each
#: spelling the README and config.example.toml give (bare URLs pick asyncpg or psycopg).
_NO_SERVER = [
    url
    for url, installed in (
        ("postgresql+asyncpg://u:p@127.0.0.1:9/db", _installed("asyncpg")),
        ("postgresql+psycopg://u:p@127.0.0.1:9/db", _installed("psycopg")),
        ("postgresql://u:p@127.0.0.1:9/db", _installed("asyncpg") or _installed("psycopg")),
        ("postgres://u:p@127.0.0.1:9/db", _installed("asyncpg") or _installed("psycopg")),
    )
    if installed
]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///x.db", "synchronous driver 'sqlite'"),
        ("postgresql+psycopg2://u:p@127.0.0.1:9/db", "synchronous driver 'postgresql+psycopg2'"),
        ("not a url", "is not a database URL"),
        ("sqlite+aiosqlite:////proc/imagine/x.db", "cannot write the database"),
        # An existing folder that refuses the file: aiosqlite's thread must not add a traceback.
        ("sqlite+aiosqlite:////proc/x.db", "cannot write the database"),
        *[(url, "is not installed: pip install") for url in _MISSING_DRIVERS],
        *[(url, "cannot connect to the database at") for url in _NO_SERVER],
    ],
)
def test_db_upgrade_failures_are_one_line(tmp_path: Path, url: str, expected: str) -> None:
    """Sync driver, bad URL, unwritable place, missing driver, no server: one line saying
    what to do (a server that is down is not a folder to make writable)."""
    proc = run_imagine(["db", "upgrade", "-q"], tmp_path, clean_environ(IMAGINE_DATABASE__URL=url))
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert expected in lines[0]
    assert "folder" not in lines[0] or url.startswith("sqlite")


def test_db_upgrade_unknown_revision_is_one_line(tmp_path: Path) -> None:
    """An unknown revision names the known ones."""
    _config(tmp_path)
    proc = run_imagine(["-q", "db", "upgrade", "zzz"], tmp_path)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        proc.stderr.strip()
    ] and "known revisions: 0001" in proc.stderr


def test_db_downgrade_needs_a_revision_and_yes_for_base(tmp_path: Path) -> None:
    """No revision: usage error. base: refused without --yes (nothing dropped); with --yes,
    the SQLite file is backed up first, then every table is dropped."""
    _config(tmp_path)
    db = tmp_path / "data" / "bot.db"
    assert run_imagine(["db", "upgrade"], tmp_path).returncode == 0
    created = _tables(db)
    assert "jobs" in created

    proc = run_imagine(["db", "downgrade"], tmp_path)
    assert proc.returncode == 2 and "required: revision" in proc.stderr
    proc = run_imagine(["db", "downgrade", "base"], tmp_path)
    assert proc.returncode == 2 and "--yes" in proc.stderr
    assert _tables(db) == created

    proc = run_imagine(["db", "downgrade", "base", "--yes"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    backups = list(db.parent.glob("bot.db.*.bak"))
    assert len(backups) == 1 and f"backed up {db} to {backups[0]}" in proc.stdout
    assert _tables(backups[0]) == created
    assert "jobs" not in _tables(db)


def test_three_upgrades_at_once_all_succeed(tmp_path: Path) -> None:
    """Concurrent starts on a new database wait for each other instead of failing."""
    _config(tmp_path)
    procs = [start_imagine(["-q", "db", "upgrade"], tmp_path) for _ in range(3)]
    results = [(proc.wait(timeout=180), proc.stderr.read()) for proc in procs]  # type: ignore[union-attr]
    for proc in procs:
        proc.stdout.close()  # type: ignore[union-attr]
        proc.stderr.close()  # type: ignore[union-attr]
    assert [code for code, _ in results] == [0, 0, 0], results
    assert "jobs" in _tables(tmp_path / "data" / "bot.db")


def test_upgrade_waits_for_the_migration_lock(tmp_path: Path) -> None:
    """While another process holds the migration lock, an upgrade waits, then completes."""
    _config(tmp_path)
    db = tmp_path / "data" / "bot.db"
    with sqlite_lock(db):
        proc = start_imagine(["-q", "db", "upgrade"], tmp_path)
        time.sleep(3)
        assert proc.poll() is None, proc.stderr.read()  # type: ignore[union-attr]
        assert not db.exists() or "jobs" not in _tables(db)
    assert proc.wait(timeout=180) == 0
    proc.stdout.close()  # type: ignore[union-attr]
    proc.stderr.close()  # type: ignore[union-attr]
    assert "jobs" in _tables(db)


def _complete(script: str, words: list[str]) -> list[str]:
    """What bash offers after `words` (the last one being completed), with `script` loaded."""
    quoted = " ".join(shlex.quote(word) for word in words)
    program = (
        f'eval "$(cat)"; COMP_WORDS=({quoted}); COMP_CWORD={len(words) - 1}; '
        'COMP_LINE="${COMP_WORDS[*]}"; COMP_POINT=${#COMP_LINE}; _shtab_imagine; '
        'printf "%s\\n" "${COMPREPLY[@]}"'
    )
    proc = subprocess.run(
        ["bash", "-c", program], input=script, capture_output=True, text=True, check=True
    )
    return proc.stdout.split()


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_bash_completion_offers_subcommands_options_and_choices(tmp_path: Path) -> None:
    """`imagine completion bash` prints a script that bash loads, and that completes the
    subcommands, each subcommand's own options and an option's choices."""
    proc = run_imagine(["completion", "bash"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""  # nothing but the script: it is meant for eval
    script = proc.stdout
    assert "complete -o bashdefault -F _shtab_imagine imagine" in script
    top = _complete(script, ["imagine", ""])
    assert {"generate", "bench", "db", "run", "worker", "completion"} <= set(top)
    assert _complete(script, ["imagine", "db", ""]) == ["upgrade", "downgrade"]
    assert _complete(script, ["imagine", "generate", "--sch"]) == ["--scheduler"]
    assert "--no-warmup" in _complete(script, ["imagine", "worker", "--"])
    assert "--yes" in _complete(script, ["imagine", "db", "downgrade", "--"])
    assert "dpmpp_2m_karras" in _complete(script, ["imagine", "generate", "--scheduler", ""])


@pytest.mark.parametrize("shell", ["zsh", "tcsh"])
def test_completion_scripts_for_zsh_and_tcsh(tmp_path: Path, shell: str) -> None:
    proc = run_imagine(["completion", shell], tmp_path)
    assert proc.returncode == 0, proc.stderr
    # tcsh lists long options without their dashes
    assert "generate" in proc.stdout and "scheduler" in proc.stdout
    assert "no-warmup" in proc.stdout and "dpmpp_2m_karras" in proc.stdout


def test_completion_for_an_unknown_shell_is_refused(tmp_path: Path) -> None:
    proc = run_imagine(["completion", "fish"], tmp_path)
    assert proc.returncode == 2
    assert "invalid choice: 'fish'" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("scheme", ["postgresql", "postgres", "postgresql+psycopg"])
def test_db_upgrade_on_postgresql_with_the_readmes_url(
    tmp_path: Path, postgres_server: PostgresServer, scheme: str
) -> None:
    """The README's `IMAGINE_DATABASE__URL=postgresql://...` then `imagine db upgrade`
    migrates a real PostgreSQL (a bare URL picks an installed async driver; psycopg 3 runs
    asynchronously), instead of being refused as a synchronous driver."""
    name = postgres_server.create_database()
    try:
        url = f"{scheme}://{SUPERUSER}@127.0.0.1:{postgres_server.port}/{name}"
        proc = run_imagine(["db", "upgrade"], tmp_path, clean_environ(IMAGINE_DATABASE__URL=url))
        assert proc.returncode == 0, proc.stderr
        assert "upgraded to head" in proc.stdout
        tables = postgres_server.psql("SELECT tablename FROM pg_tables", database=name)
        assert "jobs" in tables.split()
    finally:
        postgres_server.drop_database(name)


def test_db_upgrade_on_a_postgresql_that_cannot_fold_case_is_its_fix(
    tmp_path: Path, postgres_server: PostgresServer
) -> None:
    """A database with LC_CTYPE 'C': one line with the CREATE DATABASE that fixes it, not an
    exception class name."""
    name = postgres_server.create_database(options="LC_CTYPE 'C' LC_COLLATE 'C'")
    try:
        url = postgres_server.url(name)
        env = clean_environ(IMAGINE_DATABASE__URL=url)
        proc = run_imagine(["-q", "db", "upgrade"], tmp_path, env)
    finally:
        postgres_server.drop_database(name)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"imagine: the PostgreSQL database '{name}'")
    assert "LC_CTYPE 'C.UTF-8'" in lines[0] and "UnsupportedDatabase" not in lines[0]


@pytest.mark.parametrize("images_dir", ["/proc/imagine-images", "{file}/images"])
def test_run_refuses_an_images_folder_it_cannot_write_before_loading(
    tmp_path: Path, images_dir: str
) -> None:
    """`storage.images_dir` that cannot be written: one line at start, before the model
    loads or Discord is called (it started a bot whose every job failed when storing)."""
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    env = clean_environ(
        DISCORD_TOKEN="x",
        IMAGINE_MODEL__ID="someone/not-loaded",
        IMAGINE_STORAGE__IMAGES_DIR=images_dir.format(file=blocker),
    )
    proc = run_imagine(["-q", "run"], tmp_path, env, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot write to storage.images_dir = " in lines[0], proc.stderr
    assert "not-loaded" not in proc.stderr


def test_worker_with_a_local_backend_configuration_says_no_job_would_come(
    tmp_path: Path,
) -> None:
    """`imagine worker` on the default configuration (backend "local", SQLite): a warning
    that bots with it send no jobs, then the one line saying the pool needs PostgreSQL."""
    proc = run_imagine(["-q", "worker", "--device", "cpu"], tmp_path, timeout=60)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 2, proc.stderr
    assert 'generation.backend is "local"' in lines[0] and "needs PostgreSQL" in lines[1]
