"""The one process harness: a subprocess in its own session, its output in a log file, readiness
polled (never slept for), stopped with SIGTERM then SIGKILL after a grace, its log tail shown
when something fails.

    server = Process("web", [...], log_path=tmp_path / "web.log", env=env).start()
    server.wait_ready(lambda: answers(url), timeout=30, message="uvicorn answering")
    ...
    server.stop()

Every running ``Process`` is listed in ``RUNNING``; tests/conftest.py appends their log tails to
the report of a test that fails, so a failure seen once can be explained from its report alone.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import httpx

from tests.support.waiting import wait_for

REPO_ROOT = Path(__file__).resolve().parents[2]
LOG_ROOT = Path(tempfile.gettempdir()) / f"hangar-test-logs-{os.getpid()}"  # when a test names no log file
TAIL_CHARS = 3000
T = TypeVar("T")

_serial = itertools.count()
RUNNING: list[Process] = []  # started and not yet stopped, oldest first


class ProcessExited(AssertionError):
    """A process a test needed running has exited (the message ends with its log tail)."""


class Process:
    """One subprocess: ``start()``, ``wait_ready()``, ``log()``/``tail()``, ``stop()``/``kill()``.

    Started with ``start_new_session=True``: signals go to its whole process group, so a Celery
    worker's pool children or a shell's children go with it.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        log_path: Path | None = None,
        env: Mapping[str, str] | None = None,
        cwd: Path = REPO_ROOT,
        out_path: Path | None = None,
    ) -> None:
        """``out_path``: stdout goes there, apart from the log (a command whose output is its result)."""
        self.name = name
        self.argv = [str(arg) for arg in argv]
        self.log_path = log_path or LOG_ROOT / f"{name}-{next(_serial)}.log"
        self.env = dict(env) if env is not None else None
        self.cwd = cwd
        self.out_path = out_path
        self.proc: subprocess.Popen[bytes] | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Process:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log, contextlib.ExitStack() as stack:
            out = stack.enter_context(self.out_path.open("wb")) if self.out_path else log
            self.proc = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env=self.env,
                stdout=out,
                stderr=log,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        RUNNING.append(self)
        return self

    def wait_ready(self, predicate: Callable[[], T], timeout: float, message: str, interval: float = 0.1) -> T:
        """Poll ``predicate`` until truthy; fail at once, with the log tail, if the process exits."""

        def ready() -> T:
            self.check_alive()
            return predicate()

        try:
            return wait_for(ready, timeout, f"{self.name}: {message}", interval)
        except ProcessExited:
            raise
        except AssertionError as exc:  # the deadline passed: say what the process logged meanwhile
            raise AssertionError(f"{exc}\n{self.report()}") from None

    def check_alive(self) -> None:
        """Fail with the log tail if the process has exited."""
        if self.poll() is not None:
            raise ProcessExited(f"{self.name} exited with {self.returncode}\n{self.report()}")

    def signal(self, sig: int, *, group: bool = True) -> None:
        """Send ``sig`` to the process group (or to the main process only)."""
        proc = self._started()
        with contextlib.suppress(ProcessLookupError):
            if group:
                os.killpg(proc.pid, sig)
            else:
                proc.send_signal(sig)

    def stop(self, grace: float = 10.0) -> int:
        """SIGTERM to the group, then SIGKILL if it has not exited within ``grace`` s."""
        proc = self._started()
        if proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                proc.wait(timeout=30)
        self._forget()
        return proc.returncode

    def kill(self) -> int:
        """SIGKILL to the whole group at once (a crash, as ``kill -9`` would cause)."""
        proc = self._started()
        self.signal(signal.SIGCONT)  # a stopped (SIGSTOP) group still dies, but wakes its waiters
        self.signal(signal.SIGKILL)
        proc.wait(timeout=30)
        self._forget()
        return proc.returncode

    def wait(self, timeout: float) -> int:
        """Wait for an exit the test caused (a signal it sent); the process stays listed until then."""
        code = self._started().wait(timeout=timeout)
        self._forget()
        return code

    # ------------------------------------------------------------------ state

    @property
    def pid(self) -> int:
        return self._started().pid

    @property
    def returncode(self) -> int | None:
        return self._started().returncode

    def poll(self) -> int | None:
        return self._started().poll()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def tail(self, chars: int = TAIL_CHARS) -> str:
        return self.log()[-chars:]

    def report(self, chars: int = TAIL_CHARS) -> str:
        return f"--- {self.name} ({self.log_path}), last {chars} chars ---\n{self.tail(chars)}"

    def __enter__(self) -> Process:
        return self if self.proc is not None else self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def _started(self) -> subprocess.Popen[bytes]:
        assert self.proc is not None, f"{self.name} was never started"
        return self.proc

    def _forget(self) -> None:
        with contextlib.suppress(ValueError):
            RUNNING.remove(self)


def http_ok(url: str, *, below: int = 300, timeout: float = 2.0) -> bool:
    """A readiness predicate: ``url`` answers with a status under ``below``."""
    try:
        return httpx.get(url, timeout=timeout).status_code < below
    except httpx.HTTPError:
        return False


def running_reports(chars: int = TAIL_CHARS) -> str:
    """The log tails of every process still running, for a failed test's report."""
    return "\n".join(process.report(chars) for process in RUNNING)
