"""How the worker reaches a Docker daemon: which URLs it accepts, and with what credentials.

The worker checks a target's ``docker_url`` again here, whatever the API accepted, and refuses
before any network call:

* ``unix://`` only for sockets in ``settings.HANGAR_DOCKER_SOCKETS``;
* ``tcp://host:port`` only with the target's TLS client certificate, key and CA (verified), or
  plain when ``HANGAR_DOCKER_ALLOW_PLAIN_TCP`` is on (development; production refuses it);
* ``ssh://user@host[:port]`` only with the target's uploaded SSH key;
* nothing else (``http(s)://``, ``npipe://``...), and never credentials inside the URL.

Uploaded material is written to a private directory (0700, files 0600) that ``close`` removes.
SSH goes through docker-py's paramiko transport, with a client that offers only the uploaded key
(no agent, no ``~/.ssh`` keys, no ``~/.ssh/config``, which docker-py's own adapter would read)
and rejects unknown host keys: the target's ``ssh_known_hosts`` if uploaded, else the worker's
known_hosts. docker-py's other SSH mode shells out to ``ssh``, which offers the worker's own keys
and config, and has no way to be given one key per target.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import shutil
import ssl
import tempfile
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import paramiko  # type: ignore[import-untyped]

from workers.drivers.base import PermanentDriverError
from workers.drivers.health import Reason, causes

DEFAULT_URL = "unix:///var/run/docker.sock"
SSH_CONNECT_TIMEOUT_S = 10
# The Docker API version a client is built with before the daemon's is negotiated (docker-py's minimum).
BOOTSTRAP_API_VERSION = "1.24"
TLS_FILES = {"ca": "tls_ca", "cert": "tls_cert", "key": "tls_key"}
_HOSTNAME = re.compile(
    r"(?=.{1,253}\Z)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)


def refuse(cause: str) -> PermanentDriverError:
    """The error for a connection setting refused before any network call."""
    return PermanentDriverError(
        f"The target's Docker connection is refused: {cause}.", reason="TargetRefused", cause=cause
    )


def valid_host(host: str) -> bool:
    """An IP address or a DNS name: nothing that could smuggle a port, a path or userinfo, and no
    address that is everywhere or the machine's own services' (unspecified, link-local such as
    cloud metadata, multicast, reserved)."""
    try:
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(host)
    except ValueError:
        return bool(_HOSTNAME.fullmatch(host)) and not host.rsplit(".", 1)[-1].isdigit()
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    refused = ip.is_unspecified or ip.is_link_local or ip.is_multicast
    return not (refused or (isinstance(ip, ipaddress.IPv4Address) and ip.is_reserved))


def url_host(host: str) -> str:
    """``host`` as it goes into a URL (IPv6 literals in brackets)."""
    try:
        return f"[{host}]" if ipaddress.ip_address(host).version == 6 else host
    except ValueError:
        return host


@dataclass
class DockerConnection:
    """A checked daemon URL and the credentials to reach it; ``open`` makes the client."""

    url: str
    scheme: str
    credentials: dict[str, str] = field(default_factory=dict, repr=False)
    _dir: Path | None = field(default=None, repr=False)
    _finalizer: Any = field(default=None, repr=False)

    @classmethod
    def checked(cls, url: str, credentials: dict[str, str] | None = None) -> DockerConnection:
        """The connection for ``url``, or ``PermanentDriverError`` if the policy refuses it."""
        from django.conf import settings

        url = url or DEFAULT_URL
        creds = {k: v for k, v in (credentials or {}).items() if v}
        try:
            parts = urlsplit(url)
            port = parts.port
        except ValueError:
            raise refuse(Reason.BAD_URL) from None
        scheme = parts.scheme.lower()
        if scheme == "unix":
            if url not in set(settings.HANGAR_DOCKER_SOCKETS):
                raise refuse(Reason.SOCKET_REFUSED)
            return cls(url=url, scheme=scheme)
        if scheme not in ("tcp", "ssh"):
            raise refuse(Reason.SCHEME_REFUSED)
        if parts.password is not None or (scheme == "tcp" and "@" in parts.netloc):
            raise refuse(Reason.USERINFO_REFUSED)
        host = parts.hostname or ""
        if not valid_host(host) or parts.path not in ("", "/") or parts.query or parts.fragment:
            raise refuse(Reason.BAD_URL)
        if scheme == "tcp":
            return cls._tcp(host, port, creds, allow_plain=settings.HANGAR_DOCKER_ALLOW_PLAIN_TCP)
        return cls._ssh(parts.username, host, port, creds)

    @classmethod
    def _tcp(cls, host: str, port: int | None, creds: dict[str, str], *, allow_plain: bool) -> DockerConnection:
        if port is None:
            raise refuse(Reason.BAD_URL)
        if all(creds.get(k) for k in TLS_FILES.values()):
            return cls(url=f"tcp://{url_host(host)}:{port}", scheme="tcp", credentials=creds)
        if any(creds.get(k) for k in TLS_FILES.values()) or not allow_plain:
            raise refuse(Reason.TLS_MATERIAL_REQUIRED)
        return cls(url=f"tcp://{url_host(host)}:{port}", scheme="plain-tcp")

    @classmethod
    def _ssh(cls, username: str | None, host: str, port: int | None, creds: dict[str, str]) -> DockerConnection:
        if not username or not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", username):
            raise refuse(Reason.BAD_URL)
        if not creds.get("ssh_key"):
            raise refuse(Reason.SSH_KEY_REQUIRED)
        netloc = f"{username}@{url_host(host)}" + (f":{port}" if port else "")
        return cls(url=f"ssh://{netloc}", scheme="ssh", credentials=creds)

    # ------------------------------------------------------------------ files

    def _private_dir(self) -> Path:
        if self._dir is None:
            self._dir = Path(tempfile.mkdtemp(prefix="hangar-docker-"))  # 0700
            # Removed with the connection even if nobody calls close() (a dropped driver).
            self._finalizer = weakref.finalize(self, shutil.rmtree, str(self._dir), True)
        return self._dir

    def _write(self, name: str, content: str) -> str:
        path = self._private_dir() / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(content if content.endswith("\n") else content + "\n")
        return str(path)

    def close(self) -> None:
        """Remove the private directory and the material in it."""
        if self._finalizer is not None:
            self._finalizer()
        self._dir = None
        self._finalizer = None

    # ------------------------------------------------------------------ clients

    def open(self, *, timeout: int | None) -> Any:
        """A ``docker.DockerClient`` for this connection (network calls happen from here on)."""
        import docker

        ssh = self._ssh_adapter(timeout=timeout) if self.scheme == "ssh" else None
        # A pinned version keeps docker-py from calling the daemon while it builds the client
        # (and, for ssh://, use_ssh_client=True from connecting with an adapter of its own); the
        # version is negotiated below, once the client is set up as it must be.
        client = docker.DockerClient(
            base_url=self.url,
            version=BOOTSTRAP_API_VERSION,
            timeout=timeout,
            tls=self._tls_config() if self.scheme == "tcp" else False,
            use_ssh_client=ssh is not None,
        )
        api = client.api
        # No proxies, netrc or REQUESTS_CA_BUNDLE from the worker's environment: the uploaded CA
        # is the only one trusted (requests lets that variable override a session's CA file).
        api.trust_env = False
        if ssh is not None:
            api.mount("http+docker://ssh", ssh)
            api._custom_adapter = ssh  # docker-py 7.1 has no public hook for it
        try:
            api._version = api._retrieve_server_version()  # what version="auto" does
        except Exception:
            client.close()
            raise
        return client

    def _tls_config(self) -> Any:
        import docker.tls

        ca = self._write("ca.pem", self.credentials["tls_ca"])
        cert = self._write("cert.pem", self.credentials["tls_cert"])
        key = self._write("key.pem", self.credentials["tls_key"])
        try:  # unusable material is the target's fault, not the daemon's: say so before connecting
            context = ssl.create_default_context(cafile=ca)
            context.load_cert_chain(cert, key)
        except (ssl.SSLError, ValueError, OSError):
            raise refuse(Reason.BAD_CREDENTIALS) from None
        return docker.tls.TLSConfig(client_cert=(cert, key), ca_cert=ca, verify=True)

    def _ssh_adapter(self, *, timeout: int | None) -> Any:
        key = self._write("id_key", self.credentials["ssh_key"])
        try:
            paramiko.PKey.from_path(key)
        except (paramiko.SSHException, ValueError, OSError):
            raise refuse(Reason.BAD_CREDENTIALS) from None
        known = self.credentials.get("ssh_known_hosts")
        known_path = self._write("known_hosts", known) if known else None
        return KeyOnlySSHAdapter(self.url, key_file=key, known_hosts=known_path, timeout=timeout)


def _ssh_adapter_base() -> Any:
    from docker.transport.sshconn import SSHHTTPAdapter

    return SSHHTTPAdapter


class UntrustedHostKey(Exception):
    """The SSH server's host key is not among the trusted ones."""


# What an SSH transport raises besides OSError (for the driver's "unreachable" handling).
SSH_ERRORS = (paramiko.SSHException, UntrustedHostKey)


class KeyOnlySSHAdapter(_ssh_adapter_base()):  # type: ignore[misc]
    """docker-py's paramiko adapter, offering only one key and trusting only known host keys."""

    def __init__(self, base_url: str, *, key_file: str, known_hosts: str | None, timeout: int | None) -> None:
        self._key_file = key_file
        self._known_hosts = known_hosts
        super().__init__(base_url, timeout=timeout, shell_out=False)

    def _create_paramiko_client(self, base_url: str) -> None:
        class Reject(paramiko.MissingHostKeyPolicy):
            def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
                raise UntrustedHostKey(hostname)

        parts = urlsplit(base_url)
        client = paramiko.SSHClient()
        if self._known_hosts:
            client.load_host_keys(self._known_hosts)
        else:
            with contextlib.suppress(OSError):
                client.load_system_host_keys()
        client.set_missing_host_key_policy(Reject())
        self.ssh_client = client
        self.ssh_params = {
            "hostname": parts.hostname,
            "port": parts.port or 22,
            "username": parts.username,
            "key_filename": self._key_file,
            "look_for_keys": False,
            "allow_agent": False,
            "timeout": SSH_CONNECT_TIMEOUT_S,
            "banner_timeout": SSH_CONNECT_TIMEOUT_S,
            "auth_timeout": SSH_CONNECT_TIMEOUT_S,
        }


def classify_ssh(exc: BaseException) -> str | None:
    """The reason for an SSH failure in ``exc``'s chain, or ``None``."""
    for current in causes(exc):
        if isinstance(current, UntrustedHostKey | paramiko.BadHostKeyException):
            return Reason.HOST_KEY_UNTRUSTED
        if isinstance(current, paramiko.AuthenticationException):
            return Reason.AUTH_FAILED
    for current in causes(exc):
        if isinstance(current, paramiko.SSHException):
            return Reason.CONNECTION_FAILED
    return None
