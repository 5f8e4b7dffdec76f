"""Start, probe, restart and stop a real `riptide serve` process.

Used by conftest.py (pytest fixtures) and by scripts/bench-librdkafka.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Optional, Sequence

import kafka_wire as kw

_ANSI = re.compile(r"\x1b\[[0-9;]*m")
READY_TIMEOUT_S = float(os.environ.get("RIPTIDE_READY_TIMEOUT", "60"))
STOP_TIMEOUT_S = 10.0


def default_binary() -> Path:
    env = os.environ.get("RIPTIDE_BIN")
    if env:
        return Path(env)
    root = Path(__file__).resolve().parents[2]
    return root / "target" / "release" / "riptide"


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL the broker if the test process dies (a pytest crash or
    hard timeout must not leave brokers running)."""
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except Exception:
        pass


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_HELP_CACHE: dict = {}


def serve_flags(binary: Path) -> str:
    """`riptide serve --help` text (cached): lets the harness pass optional flags only to binaries
    that know them."""
    key = str(binary)
    if key not in _HELP_CACHE:
        try:
            out = subprocess.run([key, "serve", "--help"], capture_output=True, timeout=30)
            _HELP_CACHE[key] = out.stdout.decode(errors="replace")
        except (OSError, subprocess.TimeoutExpired):
            _HELP_CACHE[key] = ""
    return _HELP_CACHE[key]


class BrokerError(AssertionError):
    pass


class BrokerProcess:
    """One broker process with its own data directory and log file.

    Restarts reuse the data directory, the port and the log file (appending, with a marker line).
    """

    def __init__(self, workdir: Path, name: str = "broker", binary: Optional[Path] = None,
                 extra_args: Sequence[str] = (), config: Optional[dict] = None,
                 port: Optional[int] = None, cores: int = 2, log_level: str = "info") -> None:
        self.binary = Path(binary or default_binary())
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.data_dir = self.workdir / f"{name}-data"
        self.log_path = self.workdir / f"{name}.log"
        self.port = port or free_port()
        self.cores = cores
        self.log_level = log_level
        self.extra_args = list(extra_args)
        self.config = config  # when set: write a TOML file and start with `--config FILE` only
        # The admin HTTP endpoint (metrics/health) defaults to a fixed port; give every broker its own.
        self.admin_port: Optional[int] = None
        if "--admin-listen" in serve_flags(self.binary) and \
                not any(a.startswith("--admin-listen") for a in self.extra_args) and \
                "admin_listen" not in (config or {}):
            self.admin_port = free_port()
        self.proc: Optional[subprocess.Popen] = None
        self.starts = 0
        self.exit_codes: list = []
        self.api_versions: dict = {}

    # -- command line -----------------------------------------------------------------------
    @property
    def host(self) -> str:
        return "127.0.0.1"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _write_config(self) -> Path:
        cfg = {"listen": self.bootstrap, "data_dir": str(self.data_dir), "cores": self.cores,
               "log_level": self.log_level}
        if self.admin_port:
            cfg["admin_listen"] = f"127.0.0.1:{self.admin_port}"
        cfg.update(self.config or {})
        lines = []
        for k, v in cfg.items():
            if isinstance(v, bool):
                lines.append(f"{k} = {'true' if v else 'false'}")
            elif isinstance(v, int):
                lines.append(f"{k} = {v}")
            else:
                lines.append(f'{k} = "{v}"')
        path = self.workdir / f"{self.name}.toml"
        path.write_text("\n".join(lines) + "\n")
        return path

    def command(self) -> list:
        if self.config is not None:
            return [str(self.binary), "serve", "--config", str(self._write_config()), *self.extra_args]
        return [str(self.binary), "serve",
                "--listen", self.bootstrap,
                "--data-dir", str(self.data_dir),
                "--cores", str(self.cores),
                "--log-level", self.log_level,
                *([f"--admin-listen=127.0.0.1:{self.admin_port}"] if self.admin_port else []),
                *self.extra_args]

    # -- lifecycle --------------------------------------------------------------------------
    def start(self, wait: bool = True, ready_timeout: float = READY_TIMEOUT_S) -> "BrokerProcess":
        if self.proc is not None and self.proc.poll() is None:
            raise BrokerError(f"{self.name} already running (pid {self.proc.pid})")
        if not self.binary.exists():
            raise BrokerError(f"broker binary {self.binary} does not exist (set RIPTIDE_BIN)")
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = self.command()
        self.starts += 1
        with open(self.log_path, "ab") as log:
            log.write(f"\n===== start #{self.starts} at {time.strftime('%H:%M:%S')}: "
                      f"{shlex.join(cmd)}\n".encode())
            log.flush()
            env = dict(os.environ)
            env.setdefault("RUST_BACKTRACE", "1")
            env.setdefault("NO_COLOR", "1")
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         env=env, start_new_session=True, preexec_fn=_die_with_parent)
        if wait:
            self.wait_ready(ready_timeout)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout: float = READY_TIMEOUT_S) -> dict:
        """Poll until a fresh connection completes an ApiVersions round trip (or fail)."""
        deadline = time.monotonic() + timeout
        last_error: object = None
        while True:
            if not self.alive():
                rc = self.proc.poll() if self.proc else None
                raise BrokerError(f"{self.name} exited with code {rc} before becoming ready\n"
                                  f"{self.log_tail(80)}")
            try:
                with kw.KafkaConnection(self.host, self.port, timeout=5) as conn:
                    resp = conn.api_versions(0)
                if resp["error_code"] == 0 and kw.ApiKey.API_VERSIONS in resp["api_keys"]:
                    self.api_versions = resp["api_keys"]
                    return resp
                last_error = f"ApiVersions answered {resp}"
            except (OSError, kw.ConnectionClosed, kw.DecodeError) as e:
                last_error = e
            if time.monotonic() >= deadline:
                raise BrokerError(f"{self.name} not ready within {timeout}s on {self.bootstrap}: "
                                  f"last error {last_error!r}\n{self.log_tail(80)}")
            time.sleep(0.05)  # poll interval, not a synchronisation sleep

    def stop(self, timeout: float = STOP_TIMEOUT_S, check: bool = True) -> Optional[int]:
        """SIGTERM, wait up to `timeout` s. With `check`, assert a clean exit (code 0)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
                self.exit_codes.append("timeout")
                if check:
                    raise BrokerError(f"{self.name} did not exit within {timeout}s of SIGTERM "
                                      f"(killed)\n{self.log_tail(60)}")
                return None
        rc = self.proc.returncode
        self.exit_codes.append(rc)
        self.proc = None
        if check and rc != 0:
            raise BrokerError(f"{self.name} exited with code {rc} after SIGTERM (want 0)\n{self.log_tail(60)}")
        return rc

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)
        self.exit_codes.append(self.proc.returncode)
        self.proc = None

    def restart(self, hard: bool = False, **start_kwargs) -> "BrokerProcess":
        """SIGTERM (asserting exit 0) or, with hard=True, SIGKILL; then start on the same port
        and data directory."""
        if hard:
            self.kill9()
        else:
            self.stop()
        return self.start(**start_kwargs)

    def ensure_alive(self) -> None:
        """Assert the process is running and a new client gets answers (ApiVersions + Metadata)."""
        if not self.alive():
            rc = self.proc.poll() if self.proc else None
            raise BrokerError(f"{self.name} is not running (exit code {rc})\n{self.log_tail(80)}")
        with kw.KafkaConnection(self.host, self.port, timeout=10) as conn:
            resp = conn.api_versions(0)
            assert resp["error_code"] == 0, resp
            version = kw.pick_version(resp["api_keys"], kw.ApiKey.METADATA, 1, 12)
            md = conn.metadata(version, None)
            assert md["brokers"], md

    # -- logs -------------------------------------------------------------------------------
    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 200) -> str:
        text = _ANSI.sub("", self.log_text()).splitlines()
        head = f"----- {self.name} log {self.log_path} (last {min(lines, len(text))} of {len(text)} lines) -----"
        return "\n".join([head, *text[-lines:]])
