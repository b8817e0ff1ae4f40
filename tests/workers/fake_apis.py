"""Small HTTP(S) servers on 127.0.0.1 that answer like a Docker daemon or a Kubernetes API server
(or like something hostile pretending to be one), and the TLS material to put in front of them.

The drivers under test talk to these over real sockets with their real clients (docker-py,
kubernetes-client); only the far side is small. Every request is recorded.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import json
import re
import ssl
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# (method, path without the /v1.xx prefix, query string, body) -> (status, JSON-able or bytes)
Answer = tuple[int, Any]
Router = Callable[[str, str, str, bytes], Answer]


@dataclass
class Seen:
    method: str
    path: str
    query: str
    headers: dict[str, str]  # names in lower case
    body: bytes


@dataclass
class FakeAPI:
    """``with FakeAPI(router) as api: ... api.url``; ``tls`` wraps it in a server-side context."""

    router: Router
    tls: ssl.SSLContext | None = None
    seen: list[Seen] = field(default_factory=list)
    connections: int = 0

    def __enter__(self) -> FakeAPI:
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                raw_path, _, query = self.path.partition("?")
                path = re.sub(r"^/v[0-9]+\.[0-9]+(?=/)", "", raw_path)
                headers = {k.lower(): v for k, v in self.headers.items()}
                api.seen.append(Seen(self.command, path, query, headers, body))
                status, payload = api.router(self.command, path, query, body)
                data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
                self.send_response(status)
                ctype = "text/plain" if isinstance(payload, bytes) else "application/json"
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _answer

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def verify_request(self, request: Any, client_address: Any) -> bool:
                api.connections += 1
                return True

        self.server = Server(("127.0.0.1", 0), Handler)
        if self.tls is not None:
            self.server.socket = self.tls.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])


# ----------------------------------------------------------------------------- Docker


def docker_container(cid: str, *, deployment_id: int, instance: str, host_port: Any, name: str = "") -> dict[str, Any]:
    """The inspect data of one running replica container, with ``host_port`` as HostPort."""
    return {
        "Id": cid,
        "Name": "/" + (name or f"hangar-{cid}"),
        "Config": {
            "Tty": False,
            "Labels": {
                "hangar.instance": instance,
                "hangar.deployment": str(deployment_id),
                "hangar.generation": "1",
                "hangar.replica": name or f"chat-g1-{cid}",
            },
        },
        "State": {"Status": "running", "StartedAt": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f000Z")},
        "NetworkSettings": {"Ports": {"8000/tcp": [{"HostIp": "0.0.0.0", "HostPort": host_port}]}},
    }


def docker_router(
    *, containers: list[dict[str, Any]] | None = None, overrides: dict[tuple[str, str], Answer] | None = None
) -> Router:
    """Answers like Docker 24 for ``_ping``, ``version``, ``info``, images and containers;
    ``overrides`` replaces the answer to (method, path)."""
    listed = containers or []
    by_id = {c["Id"]: c for c in listed}

    def route(method: str, path: str, query: str, body: bytes) -> Answer:
        if (method, path) in (overrides or {}):
            return (overrides or {})[(method, path)]
        if path == "/_ping":
            return 200, b"OK"
        if path == "/version":
            return 200, {"Version": "24.0.7", "ApiVersion": "1.43", "MinAPIVersion": "1.12", "Os": "linux"}
        if path == "/info":
            return 200, {"NCPU": 8, "MemTotal": 16 * 2**30, "Runtimes": {"runc": {}}, "DefaultRuntime": "runc"}
        if method == "GET" and path.startswith("/images/"):
            return 200, {"Id": "sha256:" + "0" * 64, "RepoTags": ["hangar-runtime:latest"]}
        if path == "/containers/json":
            return 200, [{"Id": c["Id"], "Names": [c["Name"]], "Labels": c["Config"]["Labels"]} for c in listed]
        match = re.fullmatch(r"/containers/([^/]+)/json", path)
        if match and match.group(1) in by_id:
            return 200, by_id[match.group(1)]
        return 404, {"message": "page not found"}

    return route


# ----------------------------------------------------------------------------- TLS material


@dataclass
class Pair:
    key: ec.EllipticCurvePrivateKey
    cert: x509.Certificate

    @property
    def key_pem(self) -> str:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()

    @property
    def cert_pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()

    def write(self, directory: Path, stem: str) -> tuple[str, str]:
        cert, key = directory / f"{stem}.crt", directory / f"{stem}.key"
        cert.write_text(self.cert_pem)
        key.write_text(self.key_pem)
        return str(cert), str(key)


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_ca(common_name: str) -> Pair:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return Pair(key, cert)


def issue(ca: Pair, common_name: str, *, server: bool) -> Pair:
    """A leaf certificate signed by ``ca``: a server's for 127.0.0.1, or a client's."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False
        )
    return Pair(key, builder.sign(ca.key, hashes.SHA256()))


def server_context(ca: Pair, server: Pair, directory: Path) -> ssl.SSLContext:
    """A server-side context that presents ``server`` and requires a client certificate of ``ca``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*server.write(directory, "server"))
    ca_file = directory / "clients-ca.crt"
    ca_file.write_text(ca.cert_pem)
    context.load_verify_locations(cafile=str(ca_file))
    context.verify_mode = ssl.CERT_REQUIRED
    return context


# ----------------------------------------------------------------------------- SSH


@dataclass
class FakeSSH:
    """An SSH server on 127.0.0.1 (paramiko's server side) that lets in one user with one public
    key and, for ``docker system dial-stdio``, pipes the session to ``forward_port`` on 127.0.0.1
    (what the docker CLI does on a real host with the daemon's socket)."""

    user: str
    public_key: Any  # paramiko.PKey
    forward_port: int
    host_key: Any = None  # paramiko.PKey, generated if not given
    commands: list[str] = field(default_factory=list)
    logins: list[tuple[str, str]] = field(default_factory=list)  # (user, key fingerprint) tried

    def __enter__(self) -> FakeSSH:
        import socket

        import paramiko

        self.host_key = self.host_key or paramiko.ECDSAKey.generate()
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen()
        self.listener.settimeout(0.1)
        self.stopping = threading.Event()
        self.transports: list[Any] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stopping.set()
        self.thread.join(timeout=5)
        for transport in self.transports:
            transport.close()
        self.listener.close()

    @property
    def port(self) -> int:
        return int(self.listener.getsockname()[1])

    def known_hosts_line(self) -> str:
        return f"[127.0.0.1]:{self.port} {self.host_key.get_name()} {self.host_key.get_base64()}\n"

    def _serve(self) -> None:
        import paramiko

        server_class = _ssh_server_class(self)
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            transport = paramiko.Transport(conn)
            transport.add_server_key(self.host_key)
            self.transports.append(transport)
            try:
                transport.start_server(server=server_class())
            except (paramiko.SSHException, EOFError):
                transport.close()


def _ssh_server_class(fake: FakeSSH) -> Any:
    """The paramiko server side: public-key login as ``fake.user``, one command (``docker system dial-stdio``)."""
    import socket

    import paramiko

    class Server(paramiko.ServerInterface):
        def get_allowed_auths(self, username: str) -> str:
            return "publickey"

        def check_auth_publickey(self, username: str, key: Any) -> int:
            fake.logins.append((username, key.fingerprint))
            if username == fake.user and key == fake.public_key:
                return paramiko.AUTH_SUCCESSFUL
            return paramiko.AUTH_FAILED

        def check_channel_request(self, kind: str, chanid: int) -> int:
            if kind == "session":
                return paramiko.OPEN_SUCCEEDED
            return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED

        def check_channel_exec_request(self, channel: Any, command: bytes) -> bool:
            fake.commands.append(command.decode())
            if command != b"docker system dial-stdio":
                return False
            upstream = socket.create_connection(("127.0.0.1", fake.forward_port))
            threading.Thread(target=_pipe, args=(channel, upstream), daemon=True).start()
            threading.Thread(target=_pipe, args=(upstream, channel), daemon=True).start()
            return True

    return Server


def _pipe(source: Any, sink: Any) -> None:
    try:
        while True:
            data = source.recv(65536)
            if not data:
                break
            sink.sendall(data)
    except OSError:
        pass
    finally:
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.close()


def ssh_key_pair() -> tuple[str, Any]:
    """An Ed25519 key as an uploaded private key (OpenSSH format) and its paramiko public key."""
    import io

    import paramiko
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    private = Ed25519PrivateKey.generate()
    text = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    return text, paramiko.Ed25519Key.from_private_key(io.StringIO(text))
