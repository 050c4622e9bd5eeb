"""A throwaway PostgreSQL server for tests: Debian's server binaries, a temporary data directory, a loopback port.

`make pg-deps` installs Debian's `postgresql` package (the binaries land in /usr/lib/postgresql/<version>/bin).
initdb refuses to run as root, so when the tests run as root (CI) the server runs as the unprivileged `nobody`
user through `runuser`; otherwise as the current user. The server listens on 127.0.0.1 only, with password
authentication (scram-sha-256) for one user, exactly as Dagster connects to RDS: host, port, db, user, password.
"""

from __future__ import annotations

import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

RUN_AS_WHEN_ROOT = "nobody"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def find_bindir() -> Path | None:
    """Folder of initdb/pg_ctl/postgres: the newest /usr/lib/postgresql/<version>/bin, else from PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                   key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    initdb = shutil.which("initdb")
    return Path(os.path.realpath(initdb)).parent if initdb else None


def unavailable_reason() -> str | None:
    """Why a server cannot be started here, or None if it can."""
    bindir = find_bindir()
    if bindir is None or not (bindir / "pg_ctl").exists():
        return "PostgreSQL server binaries not found (`make pg-deps` installs Debian's postgresql package)"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without `runuser` to start PostgreSQL as an unprivileged user"
    return None


class PostgresServer:
    """initdb + pg_ctl start/stop/restart; connection settings as DAGSTER_PG_* environment variables."""

    def __init__(self, db: str = "dagster", user: str = "dagster"):
        reason = unavailable_reason()
        if reason:
            raise RuntimeError(reason)
        self.bindir = find_bindir()
        self.db, self.user = db, user
        self.password = secrets.token_urlsafe(18)
        self.port = _free_port()
        self.as_root = os.geteuid() == 0
        # not under pytest's tmp_path: that tree is private to the test user, and the server user must reach it
        self.root = Path(tempfile.mkdtemp(prefix="retail-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        if self.as_root:
            entry = pwd.getpwnam(RUN_AS_WHEN_ROOT)
            for path in (self.root, pwfile):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        os.chmod(pwfile, 0o600)
        self._as_server_user([str(self.bindir / "initdb"), "-D", str(self.data), "-U", self.user,
                              f"--pwfile={pwfile}", "--auth=scram-sha-256", "-E", "UTF8", "--locale=C",
                              "--no-sync", "--no-instructions"])
        pwfile.unlink()
        self.start()
        self._as_server_user([str(self.bindir / "createdb"), "-h", "127.0.0.1", "-p", str(self.port),
                              "-U", self.user, self.db], env={"PGPASSWORD": self.password})

    def _as_server_user(self, cmd: list[str], env: dict | None = None, check: bool = True,
                        timeout: int = 120) -> subprocess.CompletedProcess:
        full_env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C", **(env or {})}
        if self.as_root:
            # runuser passes the environment through; PGPASSWORD reaches the client this way, not its argv
            cmd = ["runuser", "-u", RUN_AS_WHEN_ROOT, "--", *cmd]
        proc = subprocess.run(cmd, env=full_env, cwd=self.root, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}\n"
                               f"{self.log_tail()}")
        return proc

    def log_tail(self, n: int = 3000) -> str:
        try:
            return self.log.read_text()[-n:]
        except OSError:
            return ""

    @property
    def env(self) -> dict[str, str]:
        """The variables deploy/dagster.yaml reads for its storage block."""
        return {"DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": str(self.port), "DAGSTER_PG_DB": self.db,
                "DAGSTER_PG_USER": self.user, "DAGSTER_PG_PASSWORD": self.password}

    def start(self) -> None:
        # listen on loopback only; the unix socket goes into the private data dir
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.data} -c max_connections=200"
        self._as_server_user([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log),
                              "-o", options, "-w", "-t", "60", "start"])

    def stop(self, mode: str = "fast") -> None:
        """`fast` disconnects every client and shuts down cleanly; `immediate` is a crash (recovery at next start)."""
        self._as_server_user([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60",
                              "stop"])

    def is_running(self) -> bool:
        return self._as_server_user([str(self.bindir / "pg_ctl"), "-D", str(self.data), "status"],
                                    check=False).returncode == 0

    def close(self) -> None:
        try:
            if self.data.exists() and self.is_running():
                self.stop("immediate")
        finally:
            shutil.rmtree(self.root, ignore_errors=True)
