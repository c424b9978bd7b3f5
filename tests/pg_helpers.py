"""Helpers for the PostgreSQL tests: the machine's server (each test in a schema of its own, dropped afterwards),
and a private server of the test's own, on a spare port, to stop and start again."""

from __future__ import annotations

import contextlib
import functools
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest

from keel.emulator.server import free_port

DATABASE_URL = os.environ.get("KEEL_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")


@functools.cache
def pg_skip_reason() -> str | None:
    """Why the PostgreSQL tests cannot run here (None: they can)."""
    try:
        psycopg.connect(DATABASE_URL, connect_timeout=2).close()
    except psycopg.Error as exc:
        return (
            f"no PostgreSQL at {DATABASE_URL} ({str(exc).strip()}); `make test` starts one with "
            "scripts/services.sh, which says why not"
        )
    return None


def in_schema(url: str, schema: str) -> str:
    """`url` with its connections' search_path set to `schema` (libpq's `options` parameter)."""
    return f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"


@contextmanager
def schema_url() -> Iterator[str]:
    """A URL whose connections work in a new schema `keel_test_<uuid>` of the machine's server; dropped after."""
    reason = pg_skip_reason()
    if reason:
        pytest.skip(reason)
    name = f"keel_test_{uuid.uuid4().hex}"
    with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}".encode())
    try:
        yield in_schema(DATABASE_URL, name)
    finally:
        with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {name} CASCADE".encode())


class PrivatePostgres:
    """A PostgreSQL server of the test's own: `initdb` into a fresh folder, run on a spare port (as the
    `postgres` user when the tests run as root, since initdb refuses root), to stop and start again."""

    def __init__(self) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
        if not found:
            pytest.skip("PostgreSQL's initdb is not installed (scripts/services.sh installs it when run as root)")
        self.bin = Path(found[-1]).parent
        self.port = free_port()
        self.user: str | None = "postgres" if os.geteuid() == 0 else None
        self.dir = Path(tempfile.mkdtemp(prefix="keel-pg-"))
        if self.user is not None:
            account = pwd.getpwnam(self.user)
            os.chown(self.dir, account.pw_uid, account.pw_gid)
        self.data = self.dir / "data"
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "keel", "--no-sync")

    @property
    def url(self) -> str:
        return f"postgresql://keel:s3cret-pg@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bin / tool), *args]
        if self.user is not None:
            command = ["runuser", "-u", self.user, "--", *command]
        subprocess.run(command, check=True, capture_output=True, cwd=self.dir, timeout=60)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "start", "-w", "-D", str(self.data), "-l", str(self.dir / "log"), "-o", options)

    def stop(self) -> None:
        self._run("pg_ctl", "stop", "-w", "-m", "fast", "-D", str(self.data))

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):  # not running
            self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def wait_for(condition: object, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)
