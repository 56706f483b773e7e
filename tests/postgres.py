"""A throwaway PostgreSQL server for the tests (plain helpers; the fixtures are in conftest.py).

`PostgresServer.start()` runs the installed PostgreSQL binaries (Debian's `postgresql`
package puts them in /usr/lib/postgresql/<major>/bin): `initdb --no-sync` into a fresh
temporary folder, then `pg_ctl start` listening on 127.0.0.1 only, on a free port, with no
Unix socket, trust authentication for the `postgres` superuser, UTF-8 and the C.UTF-8
locale (so lower() folds accented capitals the way history search needs), and durability
switched off (fsync, synchronous_commit, full_page_writes: the data is thrown away).

`initdb` and `postgres` refuse to run as root, and CI runs as root: as root the server runs
as the `postgres` system user (`runuser -u postgres --`); otherwise as the current user.

Tests get their own database cloned from a migrated template (`CREATE DATABASE ...
TEMPLATE`, tens of milliseconds) instead of migrating each one. `clone()` keeps the next
clone ready and drops used ones on a background thread, so a test rarely waits for either.
Other template contents (for example another schema on top of the app's) are built once
with `template()`.

Everything runs through the server's own `psql` (no Python driver needed to set up).
"""

from __future__ import annotations

import atexit
import contextlib
import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

#: The PostgreSQL major version the project targets (and CI installs).
MAJOR = 15
#: Where Debian installs the server binaries, one folder per major version.
DEBIAN_GLOB = "/usr/lib/postgresql/*/bin/initdb"
#: The superuser initdb creates; the tests connect as it over TCP with trust auth.
SUPERUSER = "postgres"
#: The database every test database is cloned from, migrated to head.
APP_TEMPLATE = "imagine_template"

_STARTUP_TIMEOUT_S = 60


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL binaries on this machine (or they failed to start a server)."""


def find_bin_dir() -> Path | None:
    """The folder holding `initdb`, `pg_ctl`, `postgres` and `psql`, or None.

    Order: `$IMAGINE_PG_BINDIR`, Debian's /usr/lib/postgresql/<major>/bin (version 15 first,
    then the newest), then `initdb` on PATH.
    """
    explicit = os.environ.get("IMAGINE_PG_BINDIR")
    if explicit:
        path = Path(explicit)
        return path if (path / "initdb").exists() else None
    candidates = [Path(p).parent for p in glob.glob(DEBIAN_GLOB)]
    candidates.sort(key=lambda p: (_major(p) != MAJOR, -_major(p)))
    for candidate in candidates:
        if all((candidate / tool).exists() for tool in ("initdb", "pg_ctl", "psql")):
            return candidate
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl") and shutil.which("psql"):
        return Path(on_path).parent
    return None


def _major(bin_dir: Path) -> int:
    try:
        return int(bin_dir.parent.name)
    except ValueError:
        return 0


def free_port() -> int:
    """A TCP port on 127.0.0.1 nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PostgresServer:
    """One PostgreSQL cluster in a temporary folder; `start()`, then `stop()` (also at exit)."""

    bin_dir: Path
    port: int = 0
    root: Path | None = None
    _counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _templates: dict[str, str] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    # One background thread: the next clone of each template, and drops.
    _background: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="pg-clones")
    )
    _spares: dict[str, Future[str]] = field(default_factory=dict)

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> PostgresServer:
        """initdb and start the server; raises PostgresUnavailable with the server's log."""
        self.root = Path(tempfile.mkdtemp(prefix="imagine-pg-"))
        data = self.root / "data"
        data.mkdir()
        if os.geteuid() == 0:
            # The server runs as `postgres`: it must own the folder (and reach it).
            shutil.chown(self.root, user=SUPERUSER)
            shutil.chown(data, user=SUPERUSER)
            self.root.chmod(0o755)
        data.chmod(0o700)
        atexit.register(self.stop)
        self._run_as_server_user(
            [
                str(self.bin_dir / "initdb"),
                "--no-sync",
                "--pgdata", str(data),
                "--username", SUPERUSER,
                "--auth", "trust",
                "--encoding", "UTF8",
                "--locale", "C.UTF-8",
            ],
            "initdb",
        )
        self.port = free_port()
        options = " ".join(
            [
                "-c listen_addresses=127.0.0.1",
                f"-c port={self.port}",
                "-c unix_socket_directories=''",
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
                "-c max_connections=200",
                "-c shared_buffers=64MB",
            ]
        )
        self._run_as_server_user(
            [
                str(self.bin_dir / "pg_ctl"),
                "start",
                "--wait",
                f"--timeout={_STARTUP_TIMEOUT_S}",
                "--pgdata", str(data),
                "--log", str(self.root / "server.log"),
                "-o", options,
            ],
            "pg_ctl start",
        )
        return self

    def stop(self) -> None:
        """Stop the server (immediately: nothing needs to survive) and delete its folder."""
        if self.root is None:
            return
        self._background.shutdown(wait=True, cancel_futures=True)
        root, self.root = self.root, None
        data = root / "data"
        if (data / "postmaster.pid").exists():
            with contextlib.suppress(PostgresUnavailable):
                self._run_as_server_user(
                    [str(self.bin_dir / "pg_ctl"), "stop", "--pgdata", str(data),
                     "--mode", "immediate", "--wait"],
                    "pg_ctl stop",
                )
        shutil.rmtree(root, ignore_errors=True)

    @property
    def log(self) -> str:
        """The server's log so far (for failure messages)."""
        if self.root is None:
            return ""
        path = self.root / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # -- databases ----------------------------------------------------------------------

    def url(self, database: str, driver: str = "asyncpg") -> str:
        """A SQLAlchemy URL for `database` (driver `asyncpg` or `psycopg`)."""
        return f"postgresql+{driver}://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run `sql` through psql (autocommit, stop at the first error); returns stdout."""
        result = subprocess.run(
            [
                str(self.bin_dir / "psql"),
                "--no-psqlrc", "--quiet", "--tuples-only", "--no-align",
                "--set", "ON_ERROR_STOP=1",
                "--host", "127.0.0.1", "--port", str(self.port),
                "--username", SUPERUSER, "--dbname", database,
                "--command", sql,
            ],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "PGCONNECT_TIMEOUT": "10"},
        )
        if result.returncode != 0:
            raise RuntimeError(f"psql failed ({result.returncode}): {sql}\n{result.stderr}")
        return result.stdout.strip()

    def create_database(
        self, name: str | None = None, *, template: str = "template0", options: str = ""
    ) -> str:
        """Create a database (a clone of `template`) and return its name.

        `options` is appended to CREATE DATABASE (e.g. "LC_CTYPE 'C' LC_COLLATE 'C'").
        FILE_COPY copies the template's files: faster than PostgreSQL 15's default WAL_LOG
        for small databases, and durability is off anyway.
        """
        if name is None:
            with self._lock:
                name = f"test_{os.getpid()}_{next(self._counter)}"
        self.psql(
            f'CREATE DATABASE "{name}" TEMPLATE "{template}" STRATEGY FILE_COPY {options}'
        )
        return name

    def drop_database(self, name: str, *, wait: bool = True) -> None:
        """Drop `name`, disconnecting whoever is still connected (a leaked pool); with
        `wait=False` on the background thread."""
        sql = f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'
        if wait:
            self.psql(sql)
        else:
            self._background.submit(self.psql, sql)

    def clone(self, template: str) -> str:
        """A fresh clone of `template` (made ahead of time); drop it with `wait=False`."""
        with self._lock:
            spare = self._spares.pop(template, None)
        name = spare.result() if spare is not None else self.create_database(template=template)
        with self._lock:
            if template not in self._spares:
                self._spares[template] = self._background.submit(
                    self.create_database, template=template
                )
        return name

    def template(
        self, name: str, prepare: Callable[[str], None], *, base: str = "template0"
    ) -> str:
        """A template database built once by `prepare(url)` (an asyncpg URL); returns its name.

        Later calls with the same name return the existing template. After `prepare`, the
        database is marked as a template and nobody may connect to it (CREATE DATABASE
        ... TEMPLATE needs it idle).
        """
        with self._lock:
            if name in self._templates:
                return name
            self.create_database(name, template=base)
            prepare(self.url(name))
            self.psql(
                f'ALTER DATABASE "{name}" WITH IS_TEMPLATE true ALLOW_CONNECTIONS false'
            )
            self._templates[name] = name
            return name

    # -- helpers ------------------------------------------------------------------------

    def _run_as_server_user(self, argv: list[str], what: str) -> None:
        if os.geteuid() == 0:
            argv = ["runuser", "-u", SUPERUSER, "--", *argv]
        result = subprocess.run(
            argv, capture_output=True, text=True, timeout=_STARTUP_TIMEOUT_S + 30,
            cwd=self.root or "/",
        )
        if result.returncode != 0:
            raise PostgresUnavailable(
                f"{what} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}\n"
                f"{self.log}"
            )


def migrate(url: str) -> None:
    """Apply the app's migrations to `url` (run in a worker thread: it owns its event loop)."""
    import asyncio

    from bot.db.session import upgrade

    errors: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(upgrade(url))
        except BaseException as exc:  # re-raised in the caller's thread
            errors.append(exc)

    thread = threading.Thread(target=run, name="migrate-template")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]


def app_template(server: PostgresServer) -> str:
    """The database migrated to head that per-test databases are cloned from."""
    return server.template(APP_TEMPLATE, migrate)
