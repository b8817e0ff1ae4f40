"""Replicas that come and go without clients noticing, end to end: a real Celery worker (with beat)
running real runtime replicas of the tiny model on the local driver, a real gateway process, the
`openai` client, PostgreSQL and Redis (issue 13 items 1, 5 and 6).
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from django.db import connection

from controlplane.core.context import SYSTEM
from controlplane.deployments import services
from controlplane.deployments.choices import Phase, ReplicaState
from controlplane.deployments.models import Deployment, DeploymentEvent, Replica
from tests.controlplane.gateway.conftest import Server, start_gateway
from tests.factories import ApiKeyFactory, ModelFactory, TargetFactory, TenantFactory
from tests.support.waiting import wait_for
from workers.drivers import local_driver

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

STREAMS = 64
MAX_TOKENS = 24
# The worker's pace: passes every second, fresh metrics for the autoscaler twice a second; the
# gateway drops a leaving replica within 0.3 s (its route cache), so the worker waits 1.3 s.
WORKER_ENV = {
    "HANGAR_METRICS_INTERVAL": "0.5",
    "HANGAR_REPLICA_DRAIN_SECONDS": "60",
    "HANGAR_GATEWAY_ROUTE_CACHE_SECONDS": "0.3",
    "HANGAR_GATEWAY_ROUTE_STALE_SECONDS": "0.3",
    "HANGAR_HEALTH_FAILURE_THRESHOLD": "2",
}


@dataclass
class Outcome:
    """One request as its client saw it."""

    started: float
    first_chunk: float | None = None
    ended: float = 0.0
    finish_reason: str | None = None
    error: str = ""

    @property
    def truncated(self) -> bool:
        """Ended without an error and without a finish_reason: a cut answer taken for a whole one."""
        return not self.error and self.finish_reason is None


@dataclass
class Load:
    """``streams`` clients, each sending streamed chat completions one after another until stopped."""

    base_url: str
    api_key: str
    model: str
    streams: int
    outcomes: list[Outcome] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def start(self) -> Load:
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)
        self.thread.start()
        return self

    def stop(self) -> list[Outcome]:
        self.stopping.set()
        assert self.thread is not None
        self.thread.join(timeout=300)
        assert not self.thread.is_alive(), "clients did not finish"
        return self.outcomes

    def running(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ended]

    async def _run(self) -> None:
        # No retries in the client: what it sees is what the gateway answered.
        client = openai.AsyncOpenAI(base_url=self.base_url + "/v1", api_key=self.api_key, max_retries=0, timeout=240)
        try:
            await asyncio.gather(*(self._client(client, i) for i in range(self.streams)))
        finally:
            await client.close()

    async def _client(self, client: openai.AsyncOpenAI, index: int) -> None:
        while not self.stopping.is_set():
            outcome = Outcome(started=time.monotonic())
            self.outcomes.append(outcome)
            try:
                stream = await client.chat.completions.create(
                    model=self.model,
                    messages=[{"role": "user", "content": f"tell me about the harbor {index}"}],
                    max_tokens=MAX_TOKENS,
                    stream=True,
                )
                async for chunk in stream:
                    if outcome.first_chunk is None:
                        outcome.first_chunk = time.monotonic()
                    for choice in chunk.choices:
                        outcome.finish_reason = choice.finish_reason or outcome.finish_reason
            except openai.OpenAIError as exc:
                outcome.error = f"{type(exc).__name__}: {exc}"[:300]
            outcome.ended = time.monotonic()


@dataclass
class Stack:
    deployment: Deployment
    gateway: Server
    token: str

    def reload(self) -> Deployment:
        return Deployment.objects.get(pk=self.deployment.pk)

    def load(self, streams: int) -> Load:
        return Load(self.gateway.url, self.token, self.deployment.served_model_name, streams).start()

    def ready_replicas(self) -> list[Replica]:
        return list(Replica.objects.filter(deployment=self.deployment, state=ReplicaState.READY))

    def scale_events(self) -> list[tuple[float, int, int]]:
        """(epoch seconds, from, to) of every replica count change, oldest first."""
        events = []
        for event in DeploymentEvent.objects.filter(deployment=self.deployment, reason="Scaled").order_by("id"):
            head = event.message.split(" (")[0].removeprefix("Replicas ")
            old, new = (int(n) for n in head.split(" → "))
            events.append((event.created_at.timestamp(), old, new))
        return events


@pytest.fixture
def stack(start_worker: Any, tiny_model_dir: Path, tmp_path: Path) -> Iterator[Callable[..., Stack]]:
    """``stack(**deployment fields)``: a worker, a gateway and a deployment of the tiny model."""
    gateways: list[Server] = []

    def make(*, gateway_env: dict[str, str] | None = None, ready: int | None = None, **fields: Any) -> Stack:
        start_worker(**WORKER_ENV)
        tenant = TenantFactory()
        model = ModelFactory(tenant=tenant, source=str(tiny_model_dir))
        target = TargetFactory(tenant=tenant, kind="local")
        data = {"name": "tiny", "served_model_name": "tiny", "max_batch_size": 32, **fields}
        deployment = services.deployment_create(actor=SYSTEM, tenant=tenant, model=model, target=target, data=data)
        gateway = start_gateway(
            str(connection.settings_dict["NAME"]), extra_env=gateway_env, log_path=tmp_path / f"gw{len(gateways)}.log"
        )
        gateways.append(gateway)
        key = ApiKeyFactory(tenant=tenant, name="load")  # no key or tenant limits: this load is about replicas
        result = Stack(deployment, gateway, key.secret)
        want = deployment.replicas if ready is None else ready
        wait_for(lambda: len(result.ready_replicas()) >= want, 240, f"{want} ready replica(s)", interval=0.5)
        return result

    yield make
    for gateway in gateways:
        gateway.stop()


def assert_clean(outcomes: list[Outcome]) -> None:
    failed = [o for o in outcomes if o.error]
    truncated = [o for o in outcomes if o.truncated]
    assert not failed, f"{len(failed)} of {len(outcomes)} failed, e.g. {failed[0].error}"
    assert not truncated, f"{len(truncated)} of {len(outcomes)} ended without finish_reason"


def test_scale_down_under_load_fails_and_truncates_nothing(stack: Callable[..., Stack]) -> None:
    s = stack(replicas=2, max_replicas=2)
    before = {r.backend_id for r in s.ready_replicas()}
    load = s.load(STREAMS)
    wait_for(lambda: sum(1 for o in load.outcomes if o.finish_reason) >= STREAMS, 180, "load under way", 0.2)

    services.deployment_scale(actor=SYSTEM, deployment=s.deployment, replicas=1)
    wait_for(lambda: len(local_driver().list(s.deployment.pk)) == 1, 180, "the extra replica gone", 0.2)
    served_after = len(load.outcomes)
    wait_for(lambda: sum(1 for o in load.outcomes[served_after:] if o.finish_reason) >= STREAMS, 180, "more load", 0.2)
    outcomes = load.stop()

    assert_clean(outcomes)
    left = {r.backend_id for r in s.ready_replicas()}
    assert len(left) == 1 and left < before
    reasons = list(DeploymentEvent.objects.filter(deployment=s.deployment).values_list("reason", flat=True))
    assert "ReplicaStopped" in reasons  # drained, then exited on its own: no DrainTimeout, no crash
    assert "DrainTimeout" not in reasons and "ReplicaExited" not in reasons


def test_kill_9_of_a_replica_errors_only_its_streams_and_the_rest_is_served(stack: Callable[..., Stack]) -> None:
    s = stack(replicas=2, max_replicas=2)
    load = s.load(STREAMS)
    wait_for(lambda: sum(1 for o in load.outcomes if o.finish_reason) >= STREAMS, 180, "load under way", 0.2)
    wait_for(lambda: sum(1 for o in load.running() if o.first_chunk) >= 8, 60, "streams mid-answer", 0.05)

    driver = local_driver()
    victim = driver.list(s.deployment.pk)[0]
    state = driver._read_state(driver._state_path(victim.backend_id))
    assert state is not None
    killed_at = time.monotonic()
    os.killpg(int(state["pid"]), signal.SIGKILL)
    wait_for(
        lambda: sum(1 for o in load.outcomes if o.started > killed_at and o.finish_reason) >= STREAMS,
        180,
        "load goes on",
        0.2,
    )
    outcomes = load.stop()

    errors = [o for o in outcomes if o.error]
    assert errors, "the kill cut no stream: nothing was tested"
    assert not [o for o in outcomes if o.truncated], "a cut stream ended cleanly"
    for o in errors:
        # Only streams already answering when the replica died, told so by an error event; a
        # request that had no byte of its answer yet went to the other replica instead.
        assert o.first_chunk is not None and o.started < killed_at < o.ended, o
        assert "mid-answer" in o.error, o
    assert all(o.finish_reason for o in outcomes if o.started > killed_at)


def test_a_load_ramp_scales_up_in_the_panic_window_and_down_after_stabilization(stack: Callable[..., Stack]) -> None:
    panic, stable, delay = 3, 10, 20
    s = stack(
        replicas=1,
        min_replicas=1,
        max_replicas=3,
        autoscale=True,
        target_concurrency=8,
        autoscale_panic_seconds=panic,
        autoscale_stable_seconds=stable,
        autoscale_scale_down_delay_seconds=delay,
    )
    light = s.load(1)
    wait_for(lambda: sum(1 for o in light.outcomes if o.finish_reason) >= 3, 120, "light load served", 0.2)
    assert s.reload().replicas == 1
    step = time.time()
    heavy = s.load(31)
    up = wait_for(lambda: [e for e in s.scale_events() if e[2] > e[1]], 60, "a scale-up", 0.2)
    try:
        wait_for(lambda: len(s.ready_replicas()) >= 2, 360, "a second replica ready", 0.5)
    except AssertionError:
        print(*DeploymentEvent.objects.filter(deployment=s.deployment).order_by("id").values_list("reason", "message"))
        raise
    stop = time.time()
    assert_clean(heavy.stop() + light.stop())

    down = wait_for(lambda: [e for e in s.scale_events() if e[2] < e[1]], 120, "a scale-down", 0.5)
    events = s.scale_events()
    # Metrics are scraped every 0.5 s and the autoscaler ticks every second: the panic window
    # plus those two, and the time the load takes to reach the replica.
    assert up[0][0] - step <= panic + 3.0, events
    assert down[0][0] - up[-1][0] >= delay, events  # never within the stabilization window
    assert down[0][0] >= stop
    directions = [1 if new > old else -1 for _, old, new in events]
    assert directions == sorted(directions, reverse=True), events  # ups, then downs: no flapping


def test_idle_to_zero_then_woken_by_a_request_held_in_view(stack: Callable[..., Stack]) -> None:
    s = stack(
        replicas=1,
        min_replicas=0,
        max_replicas=1,
        autoscale=True,
        scale_to_zero_idle_seconds=3,
        autoscale_stable_seconds=4,
        gateway_env={"HANGAR_GATEWAY_COLD_START_TIMEOUT": "180"},
        ready=0,  # it may well idle to zero before its first replica is even up
    )
    # The pass that removes the last replica still reports the rollout it interrupted; the next
    # pass, with nothing left to converge, says Running (scaled to zero).
    wait_for(
        lambda: (d := s.reload()).replicas == 0 and d.phase == Phase.RUNNING and not local_driver().list(d.pk),
        120,
        "scaled to zero and Running",
        0.5,
    )
    assert s.reload().phase_message.startswith("Scaled to zero"), s.reload().phase_message

    client = openai.OpenAI(base_url=s.gateway.url + "/v1", api_key=s.token, max_retries=0, timeout=200)
    answers: list[Any] = []
    thread = threading.Thread(
        target=lambda: answers.append(
            client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
        )
    )
    thread.start()
    waking = wait_for(
        lambda: (d := s.reload()).phase == Phase.WAKING and d.phase_message, 120, "phase Waking", interval=0.1
    )
    assert waking.startswith("1 request(s) held"), waking
    thread.join(200)
    assert answers and answers[0].choices[0].finish_reason, "the held request was not served"

    # Idle again, then a gateway that holds for one second only: 503 with Retry-After.
    wait_for(lambda: s.reload().replicas == 0 and not local_driver().list(s.deployment.pk), 120, "zero again", 0.5)
    impatient = start_gateway(
        str(connection.settings_dict["NAME"]), extra_env={"HANGAR_GATEWAY_COLD_START_TIMEOUT": "1"}
    )
    try:
        response = httpx.post(
            impatient.url + "/v1/chat/completions",
            json={"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
            headers={"Authorization": f"Bearer {s.token}"},
            timeout=60,
        )
    finally:
        impatient.stop()
    assert response.status_code == 503, response.text
    assert int(response.headers["retry-after"]) >= 1
    assert response.json()["error"]["type"] == "service_unavailable"
