"""Local driver: each replica is a ``python -m workers.runtime`` subprocess on 127.0.0.1.

Used by the single-machine quickstart and the tests. Replicas outlive the worker that started
them (own session, so a killed worker does not take them along); each one has a state file
``<name>.json`` next to its log ``<name>.log`` under ``DATA_DIR/replicas/<instance>/<deployment>/``
holding its pid, the pid's start time (so a recycled pid is never mistaken for the replica),
port and labels. ``list`` therefore works the same after a worker restart.

A replica gets an environment built from an allowlist (``replica_environment``), never the
worker's own: that holds the secret key, the key pepper, the encryption keys and the database
and Redis URLs, and a model may run its own code (``trust_remote_code``). Its bearer token goes
into ``<name>.token`` (mode 0600, passed as ``--token-file``) rather than the environment, so
it is neither in ``/proc/<pid>/environ`` nor inherited by whatever the model's code starts.
"""

from __future__ import annotations

import builtins
import contextlib
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from workers.drivers.base import (
    LABEL_DEPLOYMENT,
    LABEL_GENERATION,
    LABEL_INSTANCE,
    LABEL_REPLICA,
    BackendState,
    Driver,
    ObservedReplica,
    PermanentDriverError,
    ReplicaSpec,
)

STOP_GRACE_S = 10.0
STRAY_MARK = "HANGAR_LOCAL_REPLICA_OF"
STRAY_MIN_AGE_S = 60.0

# What a replica may inherit from the worker: where programs and the home directory are, the
# locale and time zone, thread tuning, and the runtime's own settings. Everything else (the
# control plane's secrets and service URLs above all) stays behind.
INHERITED = frozenset({"PATH", "HOME", "TMPDIR", "LANG", "LANGUAGE", "TZ", "PYTHONPATH", "CUDA_VISIBLE_DEVICES"})
INHERITED_PREFIXES = ("LC_", "OMP_", "MKL_", "HANGAR_RUNTIME_")
# Belt and braces: even an allowed name is dropped if it looks like a credential or a service URL.
SECRET_LIKE = re.compile(r"SECRET|PEPPER|KEY|TOKEN|PASSWORD|CREDENTIAL|DATABASE_URL|REDIS_URL|^DJANGO_|^CELERY_")
REPLICA_DEFAULTS = {"PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def replica_environment(inherited: Mapping[str, str], **extra: str) -> dict[str, str]:
    """The environment of a local replica: the allowlisted part of ``inherited``, the runtime's
    offline defaults, then ``extra``."""
    env = {
        name: value
        for name, value in inherited.items()
        if (name in INHERITED or name.startswith(INHERITED_PREFIXES)) and not SECRET_LIKE.search(name)
    }
    return env | REPLICA_DEFAULTS | extra


def _proc_start_ticks(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot (field 22 of /proc/<pid>/stat)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    if fields[0] == "Z":  # zombie: it has exited, only the exit status is left
        return None
    return int(fields[19])


def _reap(pid: int) -> int | None:
    """Collect the exit status if ``pid`` is our child (else the zombie lingers); None if still running."""
    try:
        done, status = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        return None
    if done == 0:
        return None
    return os.waitstatus_to_exitcode(status)


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class LocalDriver(Driver):
    kind = "local"

    def __init__(self, *, state_dir: Path, instance: str, runtime_module: str = "workers.runtime") -> None:
        self.root = state_dir / instance
        self.instance = instance
        self.runtime_module = runtime_module

    # ------------------------------------------------------------------ state files

    def _dir(self, deployment_id: int) -> Path:
        return self.root / str(deployment_id)

    def _state_path(self, backend_id: str) -> Path:
        deployment_id, _, name = backend_id.partition("/")
        return self._dir(int(deployment_id)) / f"{name}.json"

    def _log_path(self, backend_id: str) -> Path:
        deployment_id, _, name = backend_id.partition("/")
        return self._dir(int(deployment_id)) / f"{name}.log"

    def _token_path(self, backend_id: str) -> Path:
        deployment_id, _, name = backend_id.partition("/")
        return self._dir(int(deployment_id)) / f"{name}.token"

    def _read_state(self, path: Path) -> dict[str, Any] | None:
        try:
            return dict(json.loads(path.read_text()))
        except (OSError, ValueError):
            return None

    def _alive(self, state: dict[str, Any]) -> bool:
        pid = int(state["pid"])
        _reap(pid)
        return _proc_start_ticks(pid) == state.get("start_ticks")

    # ------------------------------------------------------------------ interface

    def list(self, deployment_id: int | None = None) -> list[ObservedReplica]:
        if deployment_id is None:
            dirs = [p for p in self.root.iterdir() if p.is_dir()] if self.root.is_dir() else []
        else:
            dirs = [self._dir(deployment_id)]
        found = []
        for directory in dirs:
            for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
                state = self._read_state(path)
                if state is None:
                    continue
                labels = state["labels"]
                alive = self._alive(state)
                found.append(
                    ObservedReplica(
                        name=labels[LABEL_REPLICA],
                        backend_id=state["backend_id"],
                        deployment_id=int(labels[LABEL_DEPLOYMENT]),
                        generation=int(labels[LABEL_GENERATION]),
                        state=BackendState.RUNNING if alive else BackendState.EXITED,
                        endpoint=state["endpoint"],
                        started_at=datetime.fromisoformat(state["started_at"]),
                        detail="" if alive else self._last_line(state["backend_id"]),
                        labels=labels,
                    )
                )
        return found

    def create(self, spec: ReplicaSpec) -> ObservedReplica:
        model = Path(spec.model_path)
        if not (model / "config.json").is_file():
            raise PermanentDriverError(
                f"Model path {model} is missing or has no config.json on this machine; "
                "fix the catalog entry's source or build the demo model with "
                "`python -m workers.runtime.tinymodel DIR`.",
                reason="ModelPathMissing",
            )
        if spec.gpus:
            raise PermanentDriverError(
                "The local target runs replicas on CPU only; use a Docker or Kubernetes target for GPUs.",
                reason="Unschedulable",
            )
        if spec.host_port:
            port = spec.host_port + spec.slot
            if not port_is_free(port):
                raise PermanentDriverError(
                    f"Port {port} on 127.0.0.1 is already in use by another process; choose another "
                    "host_port or leave it empty to use any free port.",
                    reason="PortClash",
                )
        else:
            port = free_port()
        # Unique per incarnation: a replacement reusing the name is a different replica (and its
        # predecessor's log stays readable until the deployment is deleted).
        backend_id = f"{spec.deployment_id}/{spec.name}-{secrets.token_hex(3)}"
        directory = self._dir(spec.deployment_id)
        directory.mkdir(parents=True, exist_ok=True)
        log_path = self._log_path(backend_id)
        command = [
            sys.executable,
            "-m",
            self.runtime_module,
            *spec.runtime_args(model=str(model), host="127.0.0.1", port=port),
        ]
        if spec.token:
            token_path = self._token_path(backend_id)
            # Created 0600 in one step: there is no moment at which others could read it.
            fd = os.open(token_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as token_file:
                token_file.write(spec.token)
            command += ["--token-file", str(token_path)]
        env = replica_environment(
            os.environ,
            HANGAR_RUNTIME_PORT=str(port),
            # Marks the process as ours even if its state file was never written (see strays()).
            **{STRAY_MARK: self.instance},
        )
        with log_path.open("ab") as log:
            # Own session: the replica survives its worker (even kill -9) and can be stopped
            # as a process group.
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=Path(__file__).resolve().parents[2],
                env=env,
            )
        started = datetime.now(UTC)
        endpoint = f"http://127.0.0.1:{port}"
        labels = spec.labels | {LABEL_INSTANCE: self.instance}
        state = {
            "backend_id": backend_id,
            "pid": process.pid,
            "start_ticks": _proc_start_ticks(process.pid),
            "port": port,
            "endpoint": endpoint,
            "started_at": started.isoformat(),
            "labels": labels,
            "command": command,
        }
        tmp = self._state_path(backend_id).with_suffix(".tmp")
        tmp.write_text(json.dumps(state))
        tmp.replace(self._state_path(backend_id))
        return ObservedReplica(
            name=spec.name,
            backend_id=backend_id,
            deployment_id=spec.deployment_id,
            generation=spec.generation,
            state=BackendState.RUNNING,
            endpoint=endpoint,
            started_at=started,
            labels=labels,
        )

    def remove(self, backend_id: str) -> None:
        path = self._state_path(backend_id)
        state = self._read_state(path)
        if state is not None and self._alive(state):
            self._stop(int(state["pid"]), state.get("start_ticks"))
        self._token_path(backend_id).unlink(missing_ok=True)
        path.unlink(missing_ok=True)

    def terminate(self, backend_id: str) -> None:
        """SIGTERM to the replica's process group: it drains, then exits (``remove`` kills what is left)."""
        state = self._read_state(self._state_path(backend_id))
        if state is not None and self._alive(state):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(int(state["pid"]), signal.SIGTERM)

    def _stop(self, pid: int, start_ticks: int | None) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        while time.monotonic() < deadline:
            _reap(pid)
            if _proc_start_ticks(pid) != start_ticks:
                return
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
        _reap(pid)

    def logs(self, backend_id: str, tail: int = 200) -> str:
        try:
            with self._log_path(backend_id).open("rb") as log:
                log.seek(0, os.SEEK_END)
                size = log.tell()
                log.seek(max(0, size - 256 * 1024))
                data = log.read().decode(errors="replace")
        except (OSError, ValueError):
            return ""
        lines = data.splitlines()
        return "\n".join(lines[-tail:]) + ("\n" if lines else "")

    def _last_line(self, backend_id: str) -> str:
        lines = [line for line in self.logs(backend_id, tail=20).splitlines() if line.strip()]
        return lines[-1][:500] if lines else ""

    def forget(self, deployment_id: int) -> None:
        """Delete a removed deployment's log files."""
        directory = self._dir(deployment_id)
        if directory.is_dir() and not any(directory.glob("*.json")):
            for path in directory.iterdir():
                path.unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                directory.rmdir()

    def strays(self, *, min_age_s: float = STRAY_MIN_AGE_S) -> builtins.list[int]:
        """Replica processes of this installation that no state file knows about.

        A worker killed between starting a replica and writing its state file leaves one; they
        are found by the mark in their environment. Young processes are left alone: their
        creator may be writing the file right now.
        """
        known = set()
        for path in self.root.glob("*/*.json") if self.root.is_dir() else []:
            state = self._read_state(path)
            if state is not None:
                known.add(int(state["pid"]))
        mark = f"{STRAY_MARK}={self.instance}".encode()
        ticks_per_s = os.sysconf("SC_CLK_TCK")
        uptime_s = float(Path("/proc/uptime").read_text().split()[0])
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) in known or int(entry.name) == os.getpid():
                continue
            try:
                environ = (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if mark not in environ:
                continue
            ticks = _proc_start_ticks(int(entry.name))
            if ticks is not None and uptime_s - ticks / ticks_per_s >= min_age_s:
                found.append(int(entry.name))
        return found

    def kill_strays(self) -> builtins.list[int]:
        pids = self.strays()
        for pid in pids:
            self._stop(pid, _proc_start_ticks(pid))
        return pids

    def check(self) -> dict[str, Any]:
        version = f"python {sys.version.split()[0]}"
        return {"reachable": True, "status": "ok", "reason": "", "version": version, "gpus": 0, "error": ""}
