"""A throwaway PostgreSQL server for the many-workers test: on loopback only, a free port, a temporary data
folder, trust authentication, stopped (and deleted) on exit.

``AUTOPRUNE_TEST_POSTGRES`` set: that server's URL is used as it is. Otherwise the server is started from
the binaries of an installed PostgreSQL (``pg_config --bindir`` or ``/usr/lib/postgresql/*/bin``; Debian's
``postgresql`` package, which ``.ci/run`` installs). PostgreSQL refuses to run as root: as root it runs as
the ``postgres`` user (``runuser``). ``AUTOPRUNE_REQUIRE_POSTGRES=1`` (``.ci/run``) turns "cannot start
one" from a skip into a failure, so CI never skips the test silently."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

URL_ENV = "AUTOPRUNE_TEST_POSTGRES"
REQUIRE_ENV = "AUTOPRUNE_REQUIRE_POSTGRES"


class Unavailable(Exception):
    """No server can be had here; the reason is the message."""


def _bindir() -> Path:
    candidates = []
    if shutil.which("pg_config"):
        out = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True, check=False)
        candidates.append(Path(out.stdout.strip()))
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]
    for d in candidates:
        if (d / "initdb").is_file() and (d / "pg_ctl").is_file():
            return d
    raise Unavailable("no PostgreSQL server binaries (initdb, pg_ctl): apt-get install postgresql")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def throwaway_postgres() -> Iterator[str]:
    """The URL of a PostgreSQL server for this block."""
    if os.environ.get(URL_ENV):
        yield os.environ[URL_ENV]
        return
    bindir = _bindir()
    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="autoprune-pg-"))
    if os.geteuid() == 0:  # postgres refuses root
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            raise Unavailable("running as root with no 'postgres' user to run the server as") from None
        if not shutil.which("runuser"):
            raise Unavailable("running as root without runuser to start the server as 'postgres'")
        os.chown(root, user.pw_uid, user.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data, log, port = root / "data", root / "server.log", _free_port()

    def run(*cmd: str) -> None:
        done = subprocess.run([*as_user, *cmd], capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            tail = (done.stdout + done.stderr)[-1500:]
            extra = log.read_text()[-1500:] if log.is_file() else ""
            raise Unavailable(f"{Path(cmd[0]).name} failed: {tail} {extra}")

    started = False
    try:
        run(str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "autoprune", "--no-sync")
        options = f"-c listen_addresses=127.0.0.1 -p {port} -k {root} -c fsync=off"
        run(str(bindir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(log), "-w", "-t", "60", "start")
        started = True
        yield f"postgresql://autoprune@127.0.0.1:{port}/postgres"
    finally:
        if started:
            subprocess.run(
                [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                capture_output=True, timeout=60, check=False,
            )  # fmt: skip
        shutil.rmtree(root, ignore_errors=True)
