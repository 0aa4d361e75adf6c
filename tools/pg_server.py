"""A throw-away PostgreSQL server for the distributed tests and the storage benchmark (issue 27).

    python tools/pg_server.py start --dir /tmp/bnn-pg     # prints the URL: postgresql://postgres@127.0.0.1:PORT/bnn
    python tools/pg_server.py url --dir /tmp/bnn-pg       # prints it again
    python tools/pg_server.py stop --dir /tmp/bnn-pg      # stops the server and removes the folder

The server is the system's own PostgreSQL (``initdb``/``pg_ctl`` on ``PATH`` or in ``/usr/lib/postgresql/*/bin``;
``make system-deps`` installs Debian's ``postgresql`` package where they are missing), with its cluster in a
fresh folder, listening on 127.0.0.1 on a free port and on a Unix socket in that folder, ``trust``
authentication for the superuser ``postgres`` and one database (``bnn``). PostgreSQL refuses to run as root: run
as root, the server runs as the unprivileged user ``nobody`` (the folder is handed to it), which is why the folder
must lie where ``nobody`` can reach it (``/tmp``, not under ``/root``).

In Python (tests, ``benchmarks/bench_storage.py``)::

    with PostgresServer() as server:
        url = server.create_database("study")     # postgresql://postgres@127.0.0.1:PORT/study

:func:`unavailable_reason` says in one line why no server can start here (None when one can).
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["PostgresServer", "find_program", "unavailable_reason"]

RUN_AS = "nobody"
"""The unprivileged user the server runs as when this process is root (postgres refuses root)."""
SUPERUSER = "postgres"
DATABASE = "bnn"
_URL_FILE = "url"


def find_program(name: str) -> str | None:
    """A PostgreSQL program (``initdb``, ``pg_ctl``, ``createdb``): on ``PATH``, else in Debian's versioned folder
    (``/usr/lib/postgresql/<version>/bin``, the newest version first), else None."""
    found = shutil.which(name)
    if found:
        return found
    folders = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: _version(p), reverse=True)
    for folder in folders:
        candidate = os.path.join(folder, name)
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def _version(folder: str) -> tuple[int, ...]:
    part = Path(folder).parent.name
    return tuple(int(x) for x in part.split(".") if x.isdigit()) or (0,)


def unavailable_reason() -> str | None:
    """Why no PostgreSQL server can be started here, in one line; None when one can."""
    missing = [name for name in ("initdb", "pg_ctl", "createdb") if find_program(name) is None]
    if missing:
        return (f"PostgreSQL is not installed ({', '.join(missing)} not found on PATH or in "
                "/usr/lib/postgresql/*/bin); `make system-deps` installs it (Debian's postgresql package, as root)")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(RUN_AS)
        except KeyError:
            return f"running as root, and there is no user {RUN_AS!r} to run PostgreSQL as (it refuses root)"
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PostgresServer:
    """A PostgreSQL cluster in its own folder, started on a free port, stopped and removed by :meth:`stop`.

    Args:
        root: the folder to hold the cluster (created; default a fresh one in the system temp dir). Removed by
            :meth:`stop`.
        durable: keep PostgreSQL's defaults (``fsync``, ``synchronous_commit``); False turns them off, which is
            what a test of correctness wants (faster, and a crash of the machine is not what it tests).
    """

    def __init__(self, root: str | os.PathLike | None = None, *, durable: bool = True) -> None:
        reason = unavailable_reason()
        if reason is not None:
            raise RuntimeError(reason)
        self.root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="bnnpg_"))
        self.durable = durable
        self.port: int | None = None
        self._run_as: dict[str, Any] = {}
        if os.geteuid() == 0:
            user = pwd.getpwnam(RUN_AS)
            self._run_as = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}

    # ------------------------------------------------------------------ paths
    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log(self) -> Path:
        return self.root / "server.log"

    def url(self, database: str = DATABASE) -> str:
        """The SQLAlchemy URL of ``database`` on this server (TCP on 127.0.0.1)."""
        if self.port is None:
            raise RuntimeError("the PostgreSQL server is not running; call start() first.")
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    # ------------------------------------------------------------------ life cycle
    def _run(self, args: list[str], *, timeout: float = 120) -> subprocess.CompletedProcess:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout, cwd=self.root,
                              env={**os.environ, "LC_ALL": "C"}, **self._run_as)
        if proc.returncode != 0:
            tail = self.log.read_text(errors="replace")[-2000:] if self.log.is_file() else ""
            raise RuntimeError(f"{Path(args[0]).name} failed (exit {proc.returncode}): "
                               f"{(proc.stderr or proc.stdout).strip()[-2000:]}\n{tail}")
        return proc

    def start(self) -> str:
        """initdb + pg_ctl start on a free port (a few tries if another process takes the port first); creates
        the database ``bnn``. Returns its URL."""
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        if self._run_as:
            os.chown(self.root, self._run_as["user"], self._run_as["group"])
        try:
            if not (self.data / "PG_VERSION").is_file():
                self._run([str(find_program("initdb")), "-D", str(self.data), "-U", SUPERUSER, "--auth=trust",
                           "-E", "UTF8", "--no-sync", "--no-instructions"])
            options = f"-c listen_addresses=127.0.0.1 -k {self.root}"
            if not self.durable:
                options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            for attempt in range(5):
                port = _free_port()
                try:
                    self._run([str(find_program("pg_ctl")), "-D", str(self.data), "-l", str(self.log), "-w",
                               "-t", "120", "-o", f"-p {port} {options}", "start"], timeout=180)
                except RuntimeError:
                    if attempt == 4 or "could not bind" not in self.log.read_text(errors="replace"):
                        raise
                    continue
                self.port = port
                break
            self._run([str(find_program("createdb")), "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER,
                       DATABASE])
        except BaseException:
            self.stop()
            raise
        (self.root / _URL_FILE).write_text(self.url() + "\n")
        return self.url()

    def create_database(self, name: str) -> str:
        """A new, empty database on this server; returns its URL."""
        self._run([str(find_program("createdb")), "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, name])
        return self.url(name)

    def stop(self) -> None:
        """Stop the server (immediate shutdown: nothing here needs to survive) and remove its folder."""
        pid_file = self.data / "postmaster.pid"
        if pid_file.is_file():
            try:
                self._run([str(find_program("pg_ctl")), "-D", str(self.data), "-m", "immediate", "-w", "-t", "60",
                           "stop"], timeout=90)
            except (RuntimeError, subprocess.TimeoutExpired):
                with contextlib.suppress(OSError, ValueError, IndexError):
                    os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
        self.port = None
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _server_at(folder: str) -> PostgresServer:
    server = PostgresServer(folder)
    url_file = Path(folder) / _URL_FILE
    if url_file.is_file():
        server.port = int(url_file.read_text().strip().rsplit(":", 1)[1].split("/")[0])
    return server


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("action", choices=("start", "url", "stop"))
    p.add_argument("--dir", required=True, help="the server's folder (created by start, removed by stop)")
    args = p.parse_args(argv)
    reason = unavailable_reason()
    if reason is not None:
        print(f"error: {reason}", file=sys.stderr)
        return 2
    folder = os.path.abspath(args.dir)
    if args.action == "start":
        if (Path(folder) / _URL_FILE).is_file():
            print(f"error: a server already runs in {folder} (stop it first: python tools/pg_server.py stop "
                  f"--dir {args.dir})", file=sys.stderr)
            return 2
        t0 = time.perf_counter()
        try:
            url = PostgresServer(folder).start()
        except RuntimeError as exc:
            print(f"error: {str(exc).splitlines()[0]}", file=sys.stderr)
            return 1
        print(url)
        print(f"(started in {time.perf_counter() - t0:.1f} s; log {folder}/server.log)", file=sys.stderr)
        return 0
    server = _server_at(folder)
    if server.port is None:
        print(f"error: no server in {folder} (start one: python tools/pg_server.py start --dir {args.dir})",
              file=sys.stderr)
        return 2
    if args.action == "url":
        print(server.url())
    else:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
