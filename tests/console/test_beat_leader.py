"""Two real ``celery beat`` processes with ``console.beat:LeaderScheduler`` against the test Redis:
only the lease holder sends periodic tasks, the other takes over after the leader is killed, a
leader whose lease is taken stops sending, and a beat that stops releases the lease.

What a beat sent is read from the broker's queue: each message names its sender's process in
the ``origin`` header (``gen<pid>@<host>``). No worker consumes that queue during the test.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from django.conf import settings

from console.beat import LEASE_KEY
from tests.support.processes import REPO_ROOT, Process
from tests.support.waiting import wait_for

CELERY = REPO_ROOT / ".venv" / "bin" / "celery"
LEASE_S = 2
QUEUE = "celery"  # the default queue: where beat sends scrape_metrics every HANGAR_METRICS_INTERVAL


class Beat(Process):
    def __init__(self, name: str, tmp_path: Path) -> None:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "console.settings.test",
            "CELERY_BROKER_URL": settings.REDIS_URL,
            "HANGAR_BEAT_LEASE_SECONDS": str(LEASE_S),
            "HANGAR_METRICS_INTERVAL": "0.2",
            "PYTHONUNBUFFERED": "1",
        }
        argv = [
            *(str(CELERY), "-A", "console", "beat", "--loglevel", "INFO"),
            *("--scheduler", "console.beat:LeaderScheduler", "--schedule", str(tmp_path / f"{name}.schedule")),
        ]
        super().__init__(name, argv, log_path=tmp_path / f"{name}.log", env=env)
        self.start()
        self.origin = f"gen{self.pid}@"


@pytest.fixture
def broker() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(settings.REDIS_URL)
    client.delete(QUEUE, LEASE_KEY)
    yield client
    client.delete(QUEUE, LEASE_KEY)
    client.close()


@pytest.fixture
def beats(tmp_path: Path) -> Iterator[Any]:
    started: list[Beat] = []

    def start(name: str) -> Beat:
        started.append(Beat(name, tmp_path))
        return started[-1]

    yield start
    for beat in started:
        beat.kill()


def sent_by(broker: redis.Redis, beat: Beat) -> int:
    if beat.poll() is not None and beat.returncode != -signal.SIGKILL:
        beat.check_alive()  # fails with the beat's log tail
    messages = (json.loads(raw) for raw in broker.lrange(QUEUE, 0, -1))
    return sum(1 for m in messages if m["headers"]["origin"].startswith(beat.origin))


@pytest.mark.slow
def test_only_the_lease_holder_sends_and_the_standby_takes_over(broker: redis.Redis, beats: Any) -> None:
    first = beats("first")
    wait_for(lambda: sent_by(broker, first) >= 3, timeout=90, message="first beat sending")
    second = beats("second")
    wait_for(lambda: "held by another beat: standing by" in second.log(), timeout=90, message="second beat idle")

    # While the first one keeps sending (0.2 s period), the second, polling every LEASE_S/3, sends nothing.
    baseline = sent_by(broker, first)
    wait_for(lambda: sent_by(broker, first) >= baseline + 15, timeout=30, message="first beat still sending")
    assert sent_by(broker, second) == 0

    first.kill()  # no release: the standby must wait for the lease to expire
    killed_at = time.monotonic()
    sent_by_first = sent_by(broker, first)
    wait_for(lambda: sent_by(broker, second) >= 3, timeout=LEASE_S + 30, message="second beat taking over")
    takeover_s = time.monotonic() - killed_at
    assert sent_by(broker, first) == sent_by_first
    assert takeover_s >= LEASE_S * 0.5, f"took over after {takeover_s:.1f} s, before the lease could expire"

    # A graceful stop releases the lease at once.
    second.signal(signal.SIGTERM, group=False)
    assert second.wait(timeout=30) == 0, second.tail()
    assert "lease hangar:beat-leader released" in second.log()
    assert broker.get(LEASE_KEY) is None


@pytest.mark.slow
def test_a_leader_that_loses_its_lease_stops_sending(broker: redis.Redis, beats: Any) -> None:
    beat = beats("leader")
    wait_for(lambda: sent_by(broker, beat) >= 3, timeout=90, message="beat sending")

    # Someone else holds the lease now (as after a pause longer than the TTL).
    broker.set(LEASE_KEY, "another-beat", px=4000)
    wait_for(lambda: "lost: no longer scheduling" in beat.log(), timeout=LEASE_S + 10, message="lease loss noticed")
    after_loss = sent_by(broker, beat)
    # Several of the beat's lease checks (every LEASE_S/3) pass while the other holder's runs down.
    wait_for(lambda: 0 < broker.pttl(LEASE_KEY) < 1000, timeout=10, message="the other lease running down")
    assert sent_by(broker, beat) == after_loss

    wait_for(lambda: sent_by(broker, beat) > after_loss, timeout=LEASE_S + 10, message="beat leading again")
    assert broker.get(LEASE_KEY) not in (None, b"another-beat")
