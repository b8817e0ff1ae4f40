"""The canary split of the gateway (issue 13 item 4): weights, stickiness, and who gets counted."""

from __future__ import annotations

import uuid

from controlplane.gateway.selectors import ReplicaTarget, Route, Split
from controlplane.gateway.traffic import CANARY, STABLE, choose

STABLE_REPLICAS = (ReplicaTarget(1, "http://127.0.0.1:1", 1), ReplicaTarget(2, "http://127.0.0.1:2", 1))
CANARY_REPLICA = ReplicaTarget(3, "http://127.0.0.1:3", 2)


def route(
    weight: int, sticky: str = "request", ready: tuple[ReplicaTarget, ...] = (*STABLE_REPLICAS, CANARY_REPLICA)
) -> Route:
    return Route(
        deployment_id=1, tenant_id=1, served_model_name="m", phase="Deploying", desired_state="running",
        replicas=2, min_replicas=1, max_replicas=4, autoscale=False, max_tokens_cap=16, created=0, ready=ready,
        split=Split(rollout_id=7, stable=1, canary=2, weight=weight, sticky=sticky),
    )  # fmt: skip


def test_requests_split_by_weight_and_each_side_gets_only_its_revision() -> None:
    sides = {STABLE: 0, CANARY: 0}
    for _ in range(10_000):
        narrowed, side = choose(route(20), request_id=uuid.uuid4().hex, key_id="k")
        sides[side] += 1
        assert {r.generation for r in narrowed.ready} == {2 if side == CANARY else 1}
    assert 1_800 < sides[CANARY] < 2_200, sides


def test_sticky_per_request_id_and_per_key() -> None:
    assert len({choose(route(50), request_id="same", key_id=uuid.uuid4().hex)[1] for _ in range(50)}) == 1
    per_key = {choose(route(50, "key"), request_id=uuid.uuid4().hex, key_id="k1")[1] for _ in range(50)}
    assert len(per_key) == 1
    keys = {choose(route(50, "key"), request_id="r", key_id=f"key-{i}")[1] for i in range(50)}
    assert keys == {STABLE, CANARY}


def test_a_canary_without_ready_replicas_is_not_measured_for_what_stable_served() -> None:
    for _ in range(200):
        narrowed, side = choose(route(100, ready=STABLE_REPLICAS), request_id=uuid.uuid4().hex, key_id="k")
        assert side == STABLE and narrowed.ready == STABLE_REPLICAS
    narrowed, side = choose(route(0, ready=()), request_id="r", key_id="k")
    assert side == "" and narrowed.ready == ()
    plain = route(10)
    object.__setattr__(plain, "split", None)
    assert choose(plain, request_id="r", key_id="k") == (plain, "")
