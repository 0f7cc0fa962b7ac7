"""A real PostgreSQL server for the chain-wide store tests: a private cluster (initdb) in a temporary
folder, started with pg_ctl on a free 127.0.0.1 port, trust authentication for one test role. As
root it runs as the `postgres` system user (PostgreSQL refuses to run as root). Skipped, with the
install hint, only when the server programs are missing."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from edge_app.devtools.sim import free_port


def _bin(name: str) -> str | None:
    for cand in sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"), reverse=True) + [shutil.which(name) or ""]:
        if cand and os.access(cand, os.X_OK):
            return cand
    return None


class PgServer:
    def __init__(self) -> None:
        self.initdb, self.pg_ctl = _bin("initdb"), _bin("pg_ctl")
        if not self.initdb or not self.pg_ctl:
            pytest.skip(
                "PostgreSQL is not installed (apt-get install postgresql); the chain-wide store is "
                "tested against a real server"
            )
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="agecheck-pg-"))
        self.data = self.dir / "data"
        self._as: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
            self._as = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str) -> None:
        r = subprocess.run([*self._as, *args], capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed ({r.returncode}): {(r.stdout + r.stderr).strip()[-800:]}")

    def start(self) -> PgServer:
        if not self.data.exists():
            self._run(self.initdb, "-D", str(self.data), "-U", "agecheck", "-A", "trust", "-E", "UTF8", "--no-sync")
        self._run(
            self.pg_ctl,
            "-D",
            str(self.data),
            "-l",
            str(self.dir / "server.log"),
            "-w",
            "-t",
            "60",
            "-o",
            f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off",
            "start",
        )
        return self

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self._run(self.pg_ctl, "-D", str(self.data), "-m", "fast", "-w", "stop")

    def url(self, db: str = "postgres") -> str:
        return f"postgresql://agecheck@127.0.0.1:{self.port}/{db}"

    def create_db(self, name: str) -> str:
        import psycopg

        with psycopg.connect(self.url(), autocommit=True) as con:
            con.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def close(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PgServer:
        try:
            return self.start()
        except BaseException:
            self.close()
            raise

    def __exit__(self, *exc: object) -> None:
        self.close()
