"""A Kubernetes API server double: real HTTP on 127.0.0.1, objects in memory, the API's semantics.

It answers what the Kubernetes driver uses, as the API server would, to the real ``kubernetes``
client: apps/v1 Deployments, v1 Services, Secrets, Pods (read-only: the double's own Deployment
controller makes them), Events, Nodes and ``/version``. Every write bumps a global
``resourceVersion``; ``create`` answers 409 AlreadyExists, ``replace``/``patch`` with a stale
``resourceVersion`` 409 Conflict, reads after ``delete`` 404, lists filter by ``labelSelector``,
and ``watch=true`` streams chunked JSON lines from a resourceVersion, with BOOKMARK events and an
ERROR ``410 Expired`` once the history before it has been compacted (``expire``).

The controller, scheduler and kubelet are simulated in-line: a Deployment's pods follow its spec
at once (a template change replaces them, a scale adds or removes), a pod asking for more
``nvidia.com/gpu`` than the fake node has left stays Pending with a ``FailedScheduling`` event,
and pods of a deployment put in ``crash_loop`` wait in ``CrashLoopBackOff`` with a restart count
that ``tick`` raises. Knobs for the tests: ``ready``, ``node_gpus``, ``crash_loop``, ``tick``,
``expire``, ``drop_watches``, ``before`` (run a change just before the next matching request, to
make a real conflict), ``deny`` (RBAC 403) and ``requests`` (what the client asked).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import re
import secrets as random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

GPU = "nvidia.com/gpu"
NODE = "node-1"
KINDS = {
    "deployments": ("apps/v1", "Deployment"),
    "services": ("v1", "Service"),
    "secrets": ("v1", "Secret"),
    "pods": ("v1", "Pod"),
    "events": ("v1", "Event"),
}
READ_ONLY = {"pods", "events"}  # written by the cluster itself, not by the driver
GROUP = {"deployments": "apps"}
PATH = re.compile(
    r"^/(?P<prefix>api/v1|apis/apps/v1)/namespaces/(?P<ns>[a-z0-9-]+)/(?P<res>[a-z]+)"
    r"(?:/(?P<name>[a-z0-9.-]+))?(?:/(?P<sub>log))?$"
)
VERB = {"GET": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}


VERSION = {
    "major": "1",
    "minor": "31",
    "gitVersion": "v1.31.0",
    "gitCommit": "0" * 40,
    "gitTreeState": "clean",
    "buildDate": "2026-01-01T00:00:00Z",
    "goVersion": "go1.22.0",
    "compiler": "gc",
    "platform": "linux/amd64",
}


def now_time() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_micro() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class ApiError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "details": details or {},
            "code": code,
        }
        self.code = code


def not_found(res: str, name: str) -> ApiError:
    kind = f"{res}.{GROUP[res]}" if res in GROUP else res
    return ApiError(404, "NotFound", f'{kind} "{name}" not found', {"name": name, "kind": res})


def invalid(res: str, name: str, causes: list[tuple[str, str]]) -> ApiError:
    kind = KINDS[res][1]
    text = "; ".join(f"{field}: {why}" for field, why in causes)
    return ApiError(
        422,
        "Invalid",
        f'{kind} "{name}" is invalid: {text}',
        {
            "name": name,
            "kind": kind,
            "causes": [{"reason": "FieldValueInvalid", "message": why, "field": f} for f, why in causes],
        },
    )


def _validate_deployment(name: str, obj: dict[str, Any]) -> None:
    spec = obj.get("spec") or {}
    selector = (spec.get("selector") or {}).get("matchLabels") or {}
    labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
    causes = []
    if not selector:
        causes.append(("spec.selector", "Required value"))
    elif any(labels.get(k) != v for k, v in selector.items()):
        causes.append(("spec.template.metadata.labels", "Invalid value: `selector` does not match"))
    if not ((spec.get("template") or {}).get("spec") or {}).get("containers"):
        causes.append(("spec.template.spec.containers", "Required value"))
    if causes:
        raise invalid("deployments", name, causes)


def _validate_secret(name: str, obj: dict[str, Any]) -> None:
    for key, value in (obj.get("data") or {}).items():
        try:
            base64.b64decode(value, validate=True)
        except (ValueError, TypeError):
            raise invalid("secrets", name, [(f"data[{key}]", "Invalid value: not base64")]) from None


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch (also standing in for strategic merge on the fields used)."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def selector_matches(labels: dict[str, str] | None, selector: str) -> bool:
    labels = labels or {}
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if labels.get(key) == value:
                return False
        elif "=" in term:
            key, value = term.split("=", 1)
            if labels.get(key) != value.lstrip("="):
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


@dataclass
class Change:
    rv: int
    type: str  # ADDED, MODIFIED, DELETED
    res: str
    obj: dict[str, Any]


class ApiServer:
    """The cluster's state and its rules; ``url`` serves it over HTTP."""

    def __init__(self, *, node_gpus: int = 1, bookmark_every: float = 0.2) -> None:
        self.cond = threading.Condition()
        self.rv = 1000
        self.objects: dict[tuple[str, str, str], dict[str, Any]] = {}
        self.history: list[Change] = []
        self.compacted = 0
        self.watch_epoch = 0
        self.stopping = False
        self.node_gpus = node_gpus
        self.bookmark_every = bookmark_every
        self.ready = True  # running pods pass their readiness probe
        self.crashing: set[str] = set()  # Deployment names whose pods crash-loop
        self.denied: set[tuple[str, str]] = set()  # (verb, resource) RBAC forbids
        self.hooks: list[tuple[str, str, Callable[[], None]]] = []
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self.logs: dict[str, str] = {}
        self._pod_ip = 10
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="kube-apiserver-double", daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def kubeconfig(self, *, token: str = "double-token") -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "double", "cluster": {"server": self.url}}],
            "users": [{"name": "hangar", "user": {"token": token}}],
            "contexts": [{"name": "double", "context": {"cluster": "double", "user": "hangar"}}],
            "current-context": "double",
        }

    def close(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        self.httpd.shutdown()
        self.httpd.server_close()

    # ------------------------------------------------------------------ test knobs

    def get(self, res: str, namespace: str, name: str) -> dict[str, Any] | None:
        with self.cond:
            found = self.objects.get((res, namespace, name))
            return copy.deepcopy(found) if found else None

    def items(self, res: str, namespace: str, selector: str = "") -> list[dict[str, Any]]:
        with self.cond:
            return [
                copy.deepcopy(o)
                for (r, ns, _), o in sorted(self.objects.items())
                if r == res and ns == namespace and selector_matches(o["metadata"].get("labels"), selector)
            ]

    def set_ready(self, ready: bool) -> None:
        with self.cond:
            self.ready = ready
            self._kubelet()

    def crash_loop(self, deployment: str, on: bool = True) -> None:
        with self.cond:
            (self.crashing.add if on else self.crashing.discard)(deployment)
            self._kubelet()

    def tick(self) -> None:
        """The kubelet restarts crash-looping containers once more."""
        with self.cond:
            for key, pod in list(self.objects.items()):
                if key[0] == "pods" and self._owner(pod) in self.crashing and pod["spec"].get("nodeName"):
                    status = copy.deepcopy(pod["status"])
                    status["containerStatuses"][0]["restartCount"] += 1
                    self._modify(key, {**pod, "status": status})

    def set_node_gpus(self, gpus: int) -> None:
        with self.cond:
            self.node_gpus = gpus
            self._schedule()

    def before(self, method: str, res: str, action: Callable[[], None]) -> None:
        """Run ``action`` (e.g. another writer's change) just before the next ``method`` on ``res``."""
        with self.cond:
            self.hooks.append((method, res, action))

    def deny(self, verb: str, res: str) -> None:
        with self.cond:
            self.denied.add((verb, res))

    def touch(self, res: str, namespace: str, name: str, annotations: dict[str, str]) -> None:
        """Another writer (an operator's kubectl) changes the object: a new resourceVersion."""
        with self.cond:
            obj = copy.deepcopy(self.objects[(res, namespace, name)])
            obj["metadata"].setdefault("annotations", {}).update(annotations)
            self._modify((res, namespace, name), obj)

    def expire(self, change: Callable[[], None] | None = None) -> None:
        """Compact the history (after ``change``, atomically): watches from before it get 410."""
        with self.cond:
            if change is not None:
                change()
            self.compacted = self.rv
            self.history.clear()
            self.cond.notify_all()

    def drop_watches(self) -> None:
        """End every open watch cleanly, as the API server does at its timeouts."""
        with self.cond:
            self.watch_epoch += 1
            self.cond.notify_all()

    def watch_requests(self) -> list[dict[str, str]]:
        return [q for m, p, q in self.requests if m == "GET" and q.get("watch") in ("true", "True", "1")]

    # ------------------------------------------------------------------ storage (under self.cond)

    def _bump(self) -> str:
        self.rv += 1
        return str(self.rv)

    def _record(self, type_: str, res: str, obj: dict[str, Any]) -> None:
        self.history.append(Change(int(obj["metadata"]["resourceVersion"]), type_, res, copy.deepcopy(obj)))
        self.cond.notify_all()

    def _add(self, res: str, namespace: str, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj.setdefault("metadata", {})
        meta.update(
            namespace=namespace,
            uid=meta.get("uid") or str(_uuid()),
            creationTimestamp=now_time(),
            resourceVersion=self._bump(),
        )
        api_version, kind = KINDS[res]
        obj.update(apiVersion=api_version, kind=kind)
        if res == "deployments":
            meta["generation"] = 1
        self.objects[(res, namespace, meta["name"])] = obj
        self._record("ADDED", res, obj)
        return obj

    def _modify(self, key: tuple[str, str, str], obj: dict[str, Any]) -> dict[str, Any]:
        obj["metadata"]["resourceVersion"] = self._bump()
        self.objects[key] = obj
        self._record("MODIFIED", key[0], obj)
        return obj

    def _remove(self, key: tuple[str, str, str]) -> dict[str, Any]:
        obj = self.objects.pop(key)
        obj["metadata"]["resourceVersion"] = self._bump()
        self._record("DELETED", key[0], obj)
        return obj

    # ------------------------------------------------------------------ the API

    def handle(self, method: str, path: str, query: dict[str, str], body: Any) -> tuple[int, Any]:
        with self.cond:
            self.requests.append((method, path, query))
        if path in ("/version", "/version/"):
            return 200, VERSION
        if path == "/api/v1/nodes" and method == "GET":
            return 200, self._nodes()
        match = PATH.match(path)
        if not match or match["res"] not in KINDS or (match["prefix"] == "apis/apps/v1") != (match["res"] in GROUP):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        res, ns, name, sub = match["res"], match["ns"], match["name"], match["sub"]
        verb = VERB[method] if name or method != "GET" else ("watch" if query.get("watch") else "list")
        self._run_hook(method, res)
        with self.cond:
            self._authorize(verb, method, res, ns, name)
            if sub == "log":
                return 200, self._log(ns, name, query)
            return self._serve(method, res, ns, name, query, body)

    def _run_hook(self, method: str, res: str) -> None:
        with self.cond:
            hook = next((h for h in self.hooks if h[0] == method and h[1] == res), None)
            if hook is not None:
                self.hooks.remove(hook)
        if hook is not None:
            hook[2]()  # outside the lock: it may call this very server

    def _authorize(self, verb: str, method: str, res: str, ns: str, name: str | None) -> None:
        if (verb, res) in self.denied:
            group = GROUP.get(res, "")
            raise ApiError(
                403,
                "Forbidden",
                f'{res}{"." + group if group else ""} is forbidden: User "system:serviceaccount:hangar:worker" '
                f'cannot {verb} resource "{res}" in API group "{group}" in the namespace "{ns}"',
                {"kind": res, "group": group, "name": name or ""},
            )
        if method in ("POST", "PUT", "PATCH", "DELETE") and res in READ_ONLY and res != "pods":
            raise ApiError(405, "MethodNotAllowed", "the double keeps events to the cluster")

    def _serve(
        self, method: str, res: str, ns: str, name: str | None, query: dict[str, str], body: Any
    ) -> tuple[int, Any]:
        if method == "GET" and name:
            found = self.objects.get((res, ns, name))
            if found is None:
                raise not_found(res, name)
            return 200, copy.deepcopy(found)
        if method == "GET":
            return 200, self._list(res, ns, query.get("labelSelector", ""))
        if method == "POST" and not name:
            return 201, self._create(res, ns, body)
        if method == "PUT" and name:
            return 200, self._replace(res, ns, name, body)
        if method == "PATCH" and name:
            return 200, self._patch(res, ns, name, body)
        if method == "DELETE" and name:
            return 200, self._delete(res, ns, name)
        raise ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")

    def _list(self, res: str, ns: str, selector: str) -> dict[str, Any]:
        api_version, kind = KINDS[res]
        items = [
            copy.deepcopy(o)
            for (r, n, _), o in sorted(self.objects.items())
            if r == res and n == ns and selector_matches(o["metadata"].get("labels"), selector)
        ]
        return {
            "apiVersion": api_version,
            "kind": kind + "List",
            "metadata": {"resourceVersion": str(self.rv)},
            "items": items,
        }

    def _validate(self, res: str, ns: str, obj: Any) -> str:
        if not isinstance(obj, dict) or not isinstance(obj.get("metadata"), dict) or not obj["metadata"].get("name"):
            raise invalid(res, "", [("metadata.name", "Required value: name or generateName is required")])
        name = obj["metadata"]["name"]
        if obj["metadata"].get("namespace", ns) != ns:
            raise ApiError(400, "BadRequest", "the namespace of the provided object does not match the request")
        if res == "deployments":
            _validate_deployment(str(name), obj)
        if res == "secrets":
            _validate_secret(str(name), obj)
        return str(name)

    def _create(self, res: str, ns: str, body: Any) -> dict[str, Any]:
        if res in READ_ONLY:
            raise ApiError(403, "Forbidden", f"the double's {res} are made by the cluster")
        name = self._validate(res, ns, body)
        if body["metadata"].get("resourceVersion"):
            raise ApiError(500, "InternalError", "resourceVersion should not be set on objects to be created")
        if (res, ns, name) in self.objects:
            raise ApiError(409, "AlreadyExists", f'{res} "{name}" already exists', {"name": name, "kind": res})
        obj = copy.deepcopy(body)
        if res == "services":
            obj.setdefault("spec", {})["clusterIP"] = f"10.96.0.{len(self.objects) % 250 + 2}"
        if res == "deployments":
            obj["status"] = {}
        obj = self._add(res, ns, obj)
        if res == "deployments":
            self._controller(ns, name)
        return copy.deepcopy(self.objects[(res, ns, name)])

    def _replace(self, res: str, ns: str, name: str, body: Any) -> dict[str, Any]:
        if self._validate(res, ns, body) != name:
            raise ApiError(400, "BadRequest", "the name of the object does not match the name on the URL")
        current = self.objects.get((res, ns, name))
        if current is None:
            raise not_found(res, name)
        return self._update(res, ns, name, current, copy.deepcopy(body), body["metadata"].get("resourceVersion"))

    def _patch(self, res: str, ns: str, name: str, body: Any) -> dict[str, Any]:
        current = self.objects.get((res, ns, name))
        if current is None:
            raise not_found(res, name)
        wanted = ((body or {}).get("metadata") or {}).get("resourceVersion") if isinstance(body, dict) else None
        merged = merge_patch(current, body)
        self._validate(res, ns, merged)
        return self._update(res, ns, name, current, merged, wanted)

    def _update(
        self, res: str, ns: str, name: str, current: dict[str, Any], obj: dict[str, Any], wanted: str | None
    ) -> dict[str, Any]:
        if wanted and wanted != current["metadata"]["resourceVersion"]:
            raise ApiError(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {res} "{name}": the object has been modified; '
                "please apply your changes to the latest version and try again",
                {"name": name, "kind": res},
            )
        meta = obj["metadata"]
        for kept in ("uid", "creationTimestamp", "generation"):
            if kept in current["metadata"]:
                meta[kept] = current["metadata"][kept]
        meta["namespace"] = ns
        obj["apiVersion"], obj["kind"] = KINDS[res]
        if res == "deployments":
            obj["status"] = current.get("status", {})  # status is written through /status only
            if obj.get("spec") != current.get("spec"):
                meta["generation"] = current["metadata"].get("generation", 1) + 1
        if res == "services":
            obj.setdefault("spec", {})["clusterIP"] = current["spec"].get("clusterIP")
        self._modify((res, ns, name), obj)
        if res == "deployments":
            self._controller(ns, name)
        return copy.deepcopy(self.objects[(res, ns, name)])

    def _delete(self, res: str, ns: str, name: str) -> dict[str, Any]:
        if (res, ns, name) not in self.objects:
            raise not_found(res, name)
        gone = self._remove((res, ns, name))
        if res == "deployments":  # the garbage collector takes its pods
            for key, pod in list(self.objects.items()):
                if key[0] == "pods" and key[1] == ns and self._owner(pod) == name:
                    self._remove(key)
            self._schedule()
        elif res == "pods":  # its Deployment makes a replacement
            owner = self._owner(gone)
            if ("deployments", ns, owner) in self.objects:
                self._controller(ns, owner)
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": {"name": name}}

    def _log(self, ns: str, name: str | None, query: dict[str, str]) -> str:
        if ("pods", ns, name or "") not in self.objects:
            raise not_found("pods", name or "")
        lines = self.logs.get(name or "", "hangar-runtime: stage=ready").splitlines()
        tail = int(query.get("tailLines") or len(lines) or 1)
        return "\n".join(lines[-tail:])

    def _nodes(self) -> dict[str, Any]:
        capacity = {"cpu": "16", "memory": "64Gi", "pods": "110", GPU: str(self.node_gpus)}
        node = {
            "metadata": {"name": NODE, "uid": "node-uid-1", "resourceVersion": "1"},
            "status": {"allocatable": capacity, "capacity": capacity},
        }
        return {"apiVersion": "v1", "kind": "NodeList", "metadata": {"resourceVersion": str(self.rv)}, "items": [node]}

    # ------------------------------------------------------------------ the cluster's own controllers

    @staticmethod
    def _owner(pod: dict[str, Any]) -> str:
        refs = pod["metadata"].get("ownerReferences") or [{}]
        replica_set = refs[0].get("name", "")
        return replica_set.rsplit("-", 1)[0]

    def _controller(self, ns: str, name: str) -> None:
        """The Deployment controller: pods of the current template, as many as asked."""
        deployment = self.objects[("deployments", ns, name)]
        template = deployment["spec"]["template"]
        pod_hash = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]
        own = [
            (k, p) for k, p in sorted(self.objects.items()) if k[0] == "pods" and k[1] == ns and self._owner(p) == name
        ]
        current = []
        for key, pod in own:
            if pod["metadata"]["labels"].get("pod-template-hash") != pod_hash:
                self._remove(key)  # a rolling update, at once: old pods go as new ones come
            else:
                current.append(key)
        wanted = int(deployment["spec"].get("replicas", 1))
        for key in current[wanted:]:
            self._remove(key)
        for _ in range(len(current), wanted):
            pod_name = f"{name}-{pod_hash}-{random.token_hex(3)[:5]}"
            self._add(
                "pods",
                ns,
                {
                    "metadata": {
                        "name": pod_name,
                        "labels": {**(template["metadata"].get("labels") or {}), "pod-template-hash": pod_hash},
                        "annotations": dict(template["metadata"].get("annotations") or {}),
                        "ownerReferences": [
                            {
                                "apiVersion": "apps/v1",
                                "kind": "ReplicaSet",
                                "name": f"{name}-{pod_hash}",
                                "uid": f"rs-{pod_hash}",
                                "controller": True,
                            }
                        ],
                    },
                    "spec": copy.deepcopy(template["spec"]),
                    "status": {"phase": "Pending", "conditions": []},
                },
            )
        self._schedule()
        self._deployment_status(ns, name)

    def _gpus(self, pod: dict[str, Any]) -> int:
        total = 0
        for container in pod["spec"].get("containers") or []:
            resources = container.get("resources") or {}
            total += int((resources.get("limits") or {}).get(GPU) or (resources.get("requests") or {}).get(GPU) or 0)
        return total

    def _schedule(self) -> None:
        """The scheduler: bind pending pods while the node has the GPUs they ask for."""
        pods = sorted(
            ((k, p) for k, p in self.objects.items() if k[0] == "pods"),
            key=lambda kp: int(kp[1]["metadata"]["resourceVersion"]),
        )
        used = sum(self._gpus(p) for _, p in pods if p["spec"].get("nodeName"))
        for key, pod in pods:
            if pod["spec"].get("nodeName"):
                continue
            wanted = self._gpus(pod)
            if wanted and used + wanted > self.node_gpus:
                if pod["status"].get("conditions"):
                    continue  # already told
                message = (
                    f"0/1 nodes are available: 1 Insufficient {GPU}. preemption: 0/1 nodes are available: "
                    "1 No preemption victims found for incoming pod."
                )
                status = {
                    "phase": "Pending",
                    "conditions": [
                        {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}
                    ],
                }
                self._modify(key, {**pod, "status": status})
                self._event(key[1], pod, "Warning", "FailedScheduling", message)
                continue
            used += wanted
            spec = {**pod["spec"], "nodeName": NODE}
            self._pod_ip += 1
            status = {
                "phase": "Running",
                "hostIP": "192.168.0.10",
                "podIP": f"10.244.0.{self._pod_ip % 250 + 2}",
                "startTime": now_time(),
            }
            self._modify(key, {**pod, "spec": spec, "status": status})
            self._event(key[1], pod, "Normal", "Scheduled", f"Successfully assigned {key[1]}/{key[2]} to {NODE}")
        self._kubelet()

    def _kubelet(self) -> None:
        """Container states and readiness of the bound pods."""
        for key, pod in list(self.objects.items()):
            if key[0] != "pods" or not pod["spec"].get("nodeName"):
                continue
            crashing = self._owner(pod) in self.crashing
            old = (pod["status"].get("containerStatuses") or [{}])[0]
            restarts = int(old.get("restartCount", 0))
            ready = self.ready and not crashing
            container = pod["spec"]["containers"][0]
            state: dict[str, Any]
            if crashing:
                restarts = max(restarts, 1)
                state = {
                    "waiting": {
                        "reason": "CrashLoopBackOff",
                        "message": f"back-off 10s restarting failed container={container['name']} pod={key[2]}",
                    }
                }
            else:
                state = {"running": {"startedAt": pod["status"].get("startTime") or now_time()}}
            statuses = [
                {
                    "name": container["name"],
                    "image": container.get("image", ""),
                    "imageID": "docker-pullable://" + container.get("image", ""),
                    "ready": ready,
                    "restartCount": restarts,
                    "started": not crashing,
                    "state": state,
                    **(
                        {"lastState": {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": now_time()}}}
                        if crashing
                        else {}
                    ),
                }
            ]
            flag = "True" if ready else "False"
            conditions = [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Initialized", "status": "True"},
                {"type": "ContainersReady", "status": flag},
                {"type": "Ready", "status": flag},
            ]
            status = {**pod["status"], "containerStatuses": statuses, "conditions": conditions}
            if status != pod["status"]:
                self._modify(key, {**pod, "status": status})
                if crashing:
                    self.logs.setdefault(key[2], "hangar-runtime: stage=loading\nError: the model failed to load")
        for key in [k for k in self.objects if k[0] == "deployments"]:
            self._deployment_status(key[1], key[2])

    def _deployment_status(self, ns: str, name: str) -> None:
        deployment = self.objects.get(("deployments", ns, name))
        if deployment is None:
            return
        pods = [p for k, p in self.objects.items() if k[0] == "pods" and k[1] == ns and self._owner(p) == name]
        ready = sum(
            1
            for p in pods
            if any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"].get("conditions") or [])
        )
        status = {
            "observedGeneration": deployment["metadata"].get("generation", 1),
            "replicas": len(pods),
            "updatedReplicas": len(pods),
            "readyReplicas": ready,
            "availableReplicas": ready,
        }
        if deployment.get("status") != status:
            self._modify(("deployments", ns, name), {**deployment, "status": status})

    def _event(self, ns: str, pod: dict[str, Any], type_: str, reason: str, message: str) -> None:
        """An events.k8s.io-style event as the core API shows it (eventTime, no lastTimestamp)."""
        name = f"{pod['metadata']['name']}.{random.token_hex(8)}"
        self._add(
            "events",
            ns,
            {
                "metadata": {"name": name},
                "involvedObject": {
                    "kind": "Pod",
                    "namespace": ns,
                    "name": pod["metadata"]["name"],
                    "uid": pod["metadata"]["uid"],
                    "apiVersion": "v1",
                },
                "reason": reason,
                "message": message,
                "type": type_,
                "eventTime": now_micro(),
                "reportingComponent": "default-scheduler",
                "reportingInstance": "default-scheduler-double",
                "action": "Scheduling" if reason == "FailedScheduling" else "Binding",
                "source": {},
            },
        )

    # ------------------------------------------------------------------ watch

    def watch(self, res: str, ns: str, query: dict[str, str]) -> Iterator[dict[str, Any]]:
        """Events of ``res`` from ``resourceVersion`` on; ends at the timeout, a drop, or 410."""
        selector = query.get("labelSelector", "")
        bookmarks = query.get("allowWatchBookmarks") in ("true", "True", "1")
        deadline = time.monotonic() + float(query.get("timeoutSeconds") or 1800)
        start = query.get("resourceVersion", "")
        with self.cond:
            epoch = self.watch_epoch
            if start not in ("", "0") and int(start) < self.compacted:
                yield self._expired(start)
                return
            initial, position = self._initial(res, ns, selector, start)
        for obj in initial:
            yield {"type": "ADDED", "object": obj}
        last_bookmark = time.monotonic()
        while True:
            with self.cond:
                woken = self._next_batch(epoch, deadline, position, last_bookmark if bookmarks else None)
                if woken is None:
                    return
                expired, pending, due = woken
                if expired is not None:
                    out = [expired]
                else:
                    out, position = self._events(res, ns, selector, pending, position, due=due)
                    if due:
                        last_bookmark = time.monotonic()
            yield from out
            if expired is not None:
                return

    def _initial(self, res: str, ns: str, selector: str, start: str) -> tuple[list[dict[str, Any]], int]:
        """The objects to send as ADDED first (all of them when watching from now), and the position after."""
        if start not in ("", "0"):
            return [], int(start)
        initial = [
            copy.deepcopy(o)
            for (r, n, _), o in sorted(self.objects.items())
            if r == res and n == ns and selector_matches(o["metadata"].get("labels"), selector)
        ]
        return initial, self.rv

    def _next_batch(
        self, epoch: int, deadline: float, position: int, last_bookmark: float | None
    ) -> tuple[dict[str, Any] | None, list[Change], bool] | None:
        """Under the lock: (410 error, changes since ``position``, bookmark due) once there is
        something to send; None when the watch ends (stop, drop, timeout)."""
        while True:
            if self.stopping or self.watch_epoch != epoch or time.monotonic() >= deadline:
                return None
            if position < self.compacted:
                return self._expired(str(position)), [], False
            pending = [c for c in self.history if c.rv > position]
            due = last_bookmark is not None and time.monotonic() - last_bookmark >= self.bookmark_every
            if pending or due:
                return None, pending, due
            self.cond.wait(timeout=min(self.bookmark_every, max(0.01, deadline - time.monotonic())))

    def _events(
        self, res: str, ns: str, selector: str, pending: list[Change], position: int, *, due: bool
    ) -> tuple[list[dict[str, Any]], int]:
        """The watch events among ``pending`` (or a bookmark when one is due and none match), and the new position."""
        out = [
            {"type": c.type, "object": copy.deepcopy(c.obj)}
            for c in pending
            if c.res == res
            and c.obj["metadata"].get("namespace") == ns
            and selector_matches(c.obj["metadata"].get("labels"), selector)
        ]
        position = max([position, *(c.rv for c in pending)])
        if due and not out:
            position = self.rv  # every event up to here has been sent
            api_version, kind = KINDS[res]
            metadata = {"resourceVersion": str(position)}
            out = [{"type": "BOOKMARK", "object": {"apiVersion": api_version, "kind": kind, "metadata": metadata}}]
        return out, position

    def _expired(self, start: str) -> dict[str, Any]:
        return {
            "type": "ERROR",
            "object": {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": f"too old resource version: {start} ({self.compacted})",
                "reason": "Expired",
                "code": 410,
            },
        }


def _uuid() -> str:
    import uuid

    return str(uuid.uuid4())


def _handler(server: ApiServer) -> type[BaseHTTPRequestHandler]:
    return type("Handler", (_Handler,), {"api": server})


class _Handler(BaseHTTPRequestHandler):
    """HTTP in front of an ``ApiServer`` (``api``, set by ``_handler``): bearer auth, JSON, chunked watches."""

    protocol_version = "HTTP/1.1"
    api: ApiServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    def _serve(self, method: str) -> None:
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if self.headers.get("Authorization") != "Bearer double-token":
            self._send(401, _status(401, "Unauthorized", "Unauthorized"))
            return
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            self._send(400, _status(400, "BadRequest", "the body is not JSON"))
            return
        if method == "PATCH" and "json-patch" in (self.headers.get("Content-Type") or ""):
            self._send(415, _status(415, "UnsupportedMediaType", "the double takes merge patches only"))
            return
        try:
            if method == "GET" and query.get("watch") in ("true", "True", "1"):
                self._watch(parts.path, query)
                return
            code, answer = self.api.handle(method, parts.path, query, body)
        except ApiError as exc:
            self._send(exc.code, exc.status)
            return
        self._send(code, answer)

    def _watch(self, path: str, query: dict[str, str]) -> None:
        match = PATH.match(path)
        if not match or match["name"]:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        self.api.handle("GET", path, query, None)  # RBAC, hooks, request log
        self._stream(self.api.watch(match["res"], match["ns"], query))

    def _send(self, code: int, answer: Any) -> None:
        if isinstance(answer, str):
            data, kind = answer.encode(), "text/plain"
        else:
            data, kind = json.dumps(answer).encode(), "application/json"
        self.send_response(code)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, events: Iterator[dict[str, Any]]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        try:
            for event in events:
                line = json.dumps(event).encode() + b"\n"
                self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            return

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def do_DELETE(self) -> None:
        self._serve("DELETE")


def _status(code: int, reason: str, message: str) -> dict[str, Any]:
    return ApiError(code, reason, message).status
