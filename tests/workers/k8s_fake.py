"""A recording fake of the Kubernetes AppsV1Api/CoreV1Api that accepts only real client models.

Every call is recorded as (method, args); bodies must be instances of the client's model classes
(``V1Deployment``, ``V1Service``, ``V1Secret``, ``V1DeleteOptions``), exactly what the real API classes
serialize. State is kept so list/read answer like a small API server would.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any

from kubernetes import client as k8s
from kubernetes.client.exceptions import ApiException


def _not_found(kind: str, name: str) -> ApiException:
    exc = ApiException(status=404, reason="Not Found")
    exc.body = f'{{"message": "{kind} \\"{name}\\" not found"}}'
    return exc


def _matches(labels: dict[str, str] | None, selector: str | None) -> bool:
    if not selector:
        return True
    wanted = dict(part.split("=", 1) for part in selector.split(","))
    return all((labels or {}).get(k) == v for k, v in wanted.items())


class FakeCluster:
    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.deployments: dict[tuple[str, str], k8s.V1Deployment] = {}
        self.services: dict[tuple[str, str], k8s.V1Service] = {}
        self.secrets: dict[tuple[str, str], k8s.V1Secret] = {}
        self.pods: dict[tuple[str, str], k8s.V1Pod] = {}
        self.events: list[k8s.CoreV1Event] = []
        self.logs: dict[str, str] = {}
        self.apps = FakeAppsV1Api(self)
        self.core = FakeCoreV1Api(self)

    def record(self, method: str, *args: Any) -> None:
        self.calls.append((method, args))

    def mutations(self) -> list[str]:
        return [m for m, _ in self.calls if not m.startswith(("read_", "list_"))]

    # test helpers: play the part of the Deployment controller and kubelet
    def run_pods(self, namespace: str, *, ready: bool) -> None:
        """Make the pods of every Deployment match its spec (replicas, template labels)."""
        for (ns, name), dep in self.deployments.items():
            if ns != namespace:
                continue
            labels = dep.spec.template.metadata.labels
            wanted = dep.spec.replicas
            own = [p for (pns, _), p in self.pods.items() if pns == ns and p.metadata.name.startswith(name + "-")]
            for pod in own:
                if pod.metadata.labels != labels:
                    del self.pods[(ns, pod.metadata.name)]
            own = [p for (pns, _), p in self.pods.items() if pns == ns and p.metadata.name.startswith(name + "-")]
            for pod in own[wanted:]:
                del self.pods[(ns, pod.metadata.name)]
            for index in range(len(own), wanted):
                pod_name = f"{name}-{labels['hangar.generation']}-{index}"
                self.pods[(ns, pod_name)] = k8s.V1Pod(
                    metadata=k8s.V1ObjectMeta(name=pod_name, namespace=ns, labels=dict(labels)),
                    status=k8s.V1PodStatus(
                        phase="Running",
                        pod_ip=f"10.0.0.{len(self.pods) + 1}",
                        start_time=datetime.now(UTC),
                        conditions=[],
                    ),
                )
            for (pns, _), pod in self.pods.items():
                if pns == ns and pod.metadata.name.startswith(name + "-"):
                    pod.status.conditions = [k8s.V1PodCondition(type="Ready", status="True" if ready else "False")]


class FakeAppsV1Api:
    def __init__(self, cluster: FakeCluster) -> None:
        self.c = cluster

    def create_namespaced_deployment(self, namespace: str, body: Any, **kw: Any) -> k8s.V1Deployment:
        assert isinstance(body, k8s.V1Deployment), type(body)
        self.c.record("create_namespaced_deployment", namespace, body)
        key = (namespace, body.metadata.name)
        if key in self.c.deployments:
            raise ApiException(status=409, reason="AlreadyExists")
        self.c.deployments[key] = copy.deepcopy(body)
        return body

    def read_namespaced_deployment(self, name: str, namespace: str, **kw: Any) -> k8s.V1Deployment:
        self.c.record("read_namespaced_deployment", name, namespace)
        try:
            return copy.deepcopy(self.c.deployments[(namespace, name)])
        except KeyError:
            raise _not_found("deployments", name) from None

    def patch_namespaced_deployment(self, name: str, namespace: str, body: Any, **kw: Any) -> k8s.V1Deployment:
        assert isinstance(body, k8s.V1Deployment), type(body)
        self.c.record("patch_namespaced_deployment", name, namespace, body)
        if (namespace, name) not in self.c.deployments:
            raise _not_found("deployments", name)
        self.c.deployments[(namespace, name)] = copy.deepcopy(body)
        return body

    def replace_namespaced_deployment(self, name: str, namespace: str, body: Any, **kw: Any) -> k8s.V1Deployment:
        assert isinstance(body, k8s.V1Deployment), type(body)
        self.c.record("replace_namespaced_deployment", name, namespace, body)
        if (namespace, name) not in self.c.deployments:
            raise _not_found("deployments", name)
        self.c.deployments[(namespace, name)] = copy.deepcopy(body)
        return body

    def list_namespaced_deployment(self, namespace: str, label_selector: str = "", **kw: Any) -> k8s.V1DeploymentList:
        self.c.record("list_namespaced_deployment", namespace, label_selector)
        items = [
            d
            for (ns, _), d in self.c.deployments.items()
            if ns == namespace and _matches(d.metadata.labels, label_selector)
        ]
        return k8s.V1DeploymentList(items=items)

    def delete_namespaced_deployment(self, name: str, namespace: str, body: Any = None, **kw: Any) -> k8s.V1Status:
        assert body is None or isinstance(body, k8s.V1DeleteOptions), type(body)
        self.c.record("delete_namespaced_deployment", name, namespace)
        if self.c.deployments.pop((namespace, name), None) is None:
            raise _not_found("deployments", name)
        for key in [k for k in self.c.pods if k[0] == namespace and k[1].startswith(name + "-")]:
            del self.c.pods[key]
        return k8s.V1Status(status="Success")


class FakeCoreV1Api:
    def __init__(self, cluster: FakeCluster) -> None:
        self.c = cluster

    def read_namespaced_service(self, name: str, namespace: str, **kw: Any) -> k8s.V1Service:
        self.c.record("read_namespaced_service", name, namespace)
        try:
            return self.c.services[(namespace, name)]
        except KeyError:
            raise _not_found("services", name) from None

    def create_namespaced_service(self, namespace: str, body: Any, **kw: Any) -> k8s.V1Service:
        assert isinstance(body, k8s.V1Service), type(body)
        self.c.record("create_namespaced_service", namespace, body)
        self.c.services[(namespace, body.metadata.name)] = body
        return body

    def list_namespaced_service(self, namespace: str, label_selector: str = "", **kw: Any) -> k8s.V1ServiceList:
        self.c.record("list_namespaced_service", namespace, label_selector)
        items = [
            s
            for (ns, _), s in self.c.services.items()
            if ns == namespace and _matches(s.metadata.labels, label_selector)
        ]
        return k8s.V1ServiceList(items=items)

    def delete_namespaced_service(self, name: str, namespace: str, **kw: Any) -> k8s.V1Status:
        self.c.record("delete_namespaced_service", name, namespace)
        if self.c.services.pop((namespace, name), None) is None:
            raise _not_found("services", name)
        return k8s.V1Status(status="Success")

    def read_namespaced_secret(self, name: str, namespace: str, **kw: Any) -> k8s.V1Secret:
        self.c.record("read_namespaced_secret", name, namespace)
        try:
            return copy.deepcopy(self.c.secrets[(namespace, name)])
        except KeyError:
            raise _not_found("secrets", name) from None

    def create_namespaced_secret(self, namespace: str, body: Any, **kw: Any) -> k8s.V1Secret:
        assert isinstance(body, k8s.V1Secret), type(body)
        self.c.record("create_namespaced_secret", namespace, body)
        key = (namespace, body.metadata.name)
        if key in self.c.secrets:
            raise ApiException(status=409, reason="AlreadyExists")
        self.c.secrets[key] = copy.deepcopy(body)
        return body

    def patch_namespaced_secret(self, name: str, namespace: str, body: Any, **kw: Any) -> k8s.V1Secret:
        assert isinstance(body, k8s.V1Secret), type(body)
        self.c.record("patch_namespaced_secret", name, namespace, body)
        if (namespace, name) not in self.c.secrets:
            raise _not_found("secrets", name)
        self.c.secrets[(namespace, name)] = copy.deepcopy(body)
        return body

    def replace_namespaced_secret(self, name: str, namespace: str, body: Any, **kw: Any) -> k8s.V1Secret:
        assert isinstance(body, k8s.V1Secret), type(body)
        self.c.record("replace_namespaced_secret", name, namespace, body)
        if (namespace, name) not in self.c.secrets:
            raise _not_found("secrets", name)
        self.c.secrets[(namespace, name)] = copy.deepcopy(body)
        return body

    def list_namespaced_secret(self, namespace: str, label_selector: str = "", **kw: Any) -> k8s.V1SecretList:
        self.c.record("list_namespaced_secret", namespace, label_selector)
        items = [
            s
            for (ns, _), s in self.c.secrets.items()
            if ns == namespace and _matches(s.metadata.labels, label_selector)
        ]
        return k8s.V1SecretList(items=items)

    def delete_namespaced_secret(self, name: str, namespace: str, **kw: Any) -> k8s.V1Status:
        self.c.record("delete_namespaced_secret", name, namespace)
        if self.c.secrets.pop((namespace, name), None) is None:
            raise _not_found("secrets", name)
        return k8s.V1Status(status="Success")

    def list_namespaced_pod(self, namespace: str, label_selector: str = "", **kw: Any) -> k8s.V1PodList:
        self.c.record("list_namespaced_pod", namespace, label_selector)
        items = [
            p for (ns, _), p in self.c.pods.items() if ns == namespace and _matches(p.metadata.labels, label_selector)
        ]
        return k8s.V1PodList(items=items)

    def delete_namespaced_pod(self, name: str, namespace: str, **kw: Any) -> k8s.V1Pod:
        self.c.record("delete_namespaced_pod", name, namespace)
        pod = self.c.pods.pop((namespace, name), None)
        if pod is None:
            raise _not_found("pods", name)
        return pod

    def read_namespaced_pod_log(self, name: str, namespace: str, tail_lines: int | None = None, **kw: Any) -> str:
        self.c.record("read_namespaced_pod_log", name, namespace)
        if (namespace, name) not in self.c.pods:
            raise _not_found("pods", name)
        lines = self.c.logs.get(name, "").splitlines()
        return "\n".join(lines[-(tail_lines or len(lines)) :])

    def list_namespaced_event(self, namespace: str, **kw: Any) -> k8s.CoreV1EventList:
        self.c.record("list_namespaced_event", namespace)
        return k8s.CoreV1EventList(items=[e for e in self.c.events if e.metadata.namespace == namespace])

    def list_node(self, **kw: Any) -> k8s.V1NodeList:
        self.c.record("list_node")
        return k8s.V1NodeList(
            items=[
                k8s.V1Node(
                    metadata=k8s.V1ObjectMeta(name="gpu-1"),
                    status=k8s.V1NodeStatus(allocatable={"nvidia.com/gpu": "4"}),
                )
            ]
        )
