"""A real PostgreSQL server on loopback for the tuning tests: Debian's binaries, a temporary data directory,
a free port on 127.0.0.1, the socket in the data directory; stopped (and removed) afterwards.

`initdb` refuses to run as root, so as root the server runs as the `postgres` system user."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _binary(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(candidates[-1]) if candidates else None


@contextmanager
def postgres_server() -> Iterator[str]:
    """Yields a SQLAlchemy URL `postgresql+psycopg2://rlgrid@127.0.0.1:PORT/rlgrid` (trust auth, loopback only)."""
    initdb, pg_ctl = _binary("initdb"), _binary("pg_ctl")
    if not initdb or not pg_ctl:
        raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl) not found: apt-get install postgresql")
    as_root = os.geteuid() == 0
    data = Path(tempfile.mkdtemp(prefix="rlgrid-pg-"))

    def run(*command: str) -> None:
        if as_root:
            command = ("runuser", "-u", "postgres", "--", *command)
        subprocess.run(command, check=True, capture_output=True, text=True, timeout=120)

    if as_root:
        shutil.chown(data, "postgres", "postgres")
    port = _free_port()
    run(initdb, "-D", str(data / "db"), "-U", "rlgrid", "--auth=trust", "-E", "UTF8")
    options = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={data} -c max_connections=50"
    run(pg_ctl, "-D", str(data / "db"), "-o", options, "-l", str(data / "server.log"), "-w", "start")
    try:
        import psycopg2

        for _ in range(50):
            try:
                connection = psycopg2.connect(host="127.0.0.1", port=port, user="rlgrid", dbname="postgres")
                break
            except psycopg2.OperationalError:
                time.sleep(0.2)
        connection.autocommit = True
        connection.cursor().execute("CREATE DATABASE rlgrid")
        connection.close()
        yield f"postgresql+psycopg2://rlgrid@127.0.0.1:{port}/rlgrid"
    finally:
        run(pg_ctl, "-D", str(data / "db"), "-m", "immediate", "-w", "stop")
        shutil.rmtree(data, ignore_errors=True)
