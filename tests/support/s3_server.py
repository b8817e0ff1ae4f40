"""A real S3-compatible endpoint for the tests: ``moto_server`` in a subprocess, on a free port.

    with s3_server(tmp_path) as s3:
        s3.client().create_bucket(Bucket="models")
        s3.upload_dir(path, bucket="models", prefix="tiny")

Credentials are real: moto runs with authentication on (``INITIAL_NO_AUTH_ACTION_COUNT``: only
the three IAM calls that create the tests' user, its policy and its access key go without), so a
wrong secret is answered ``SignatureDoesNotMatch`` as S3 does.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.support.ports import free_port
from tests.support.processes import Process

REGION = "us-east-1"
ALLOW_ALL = json.dumps({"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]})


@dataclass
class S3Server:
    url: str
    process: Process
    access_key: str = ""
    secret_key: str = ""

    def client(self, secret: str = "") -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            region_name=REGION,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=secret or self.secret_key,
        )

    def create_user(self) -> None:
        import boto3

        iam = boto3.client(
            "iam", endpoint_url=self.url, region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x"
        )
        iam.create_user(UserName="hangar")
        iam.put_user_policy(UserName="hangar", PolicyName="all", PolicyDocument=ALLOW_ALL)
        key = iam.create_access_key(UserName="hangar")["AccessKey"]
        self.access_key, self.secret_key = key["AccessKeyId"], key["SecretAccessKey"]

    def credential(self, tenant: Any, name: str = "minio", *, endpoint_url: str = "") -> Any:
        """A source credential of ``tenant`` for this server (endpoint, region, its keys); through
        ``endpoint_url`` (a proxy in front of this server) when given."""
        from controlplane.catalog import services as catalog
        from controlplane.core.context import SYSTEM

        return catalog.source_credential_create(
            actor=SYSTEM,
            tenant=tenant,
            name=name,
            kind="s3",
            endpoint_url=endpoint_url or self.url,
            region=REGION,
            secret={"access_key_id": self.access_key, "secret_access_key": self.secret_key},
        )

    def upload_dir(self, path: Path, *, bucket: str, prefix: str) -> list[str]:
        client = self.client()
        keys = []
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            key = f"{prefix}/{file.relative_to(path).as_posix()}"
            client.upload_file(str(file), bucket, key)
            keys.append(key)
        return keys


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/moto-api/", timeout=1).status_code < 500
    except httpx.HTTPError:
        return False


@contextmanager
def s3_server(tmp_path: Path, host: str = "127.0.0.1") -> Iterator[S3Server]:
    """``host``: the address it listens on (containers reach the host at its Docker bridge's gateway)."""
    port = free_port()
    binary = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or "moto_server"
    env = {**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "3", "MOTO_ALLOW_NONEXISTENT_REGION": "true"}
    process = Process("moto", [binary, "-H", host, "-p", str(port)], log_path=tmp_path / "moto.log", env=env)
    process.start()
    url = f"http://{host}:{port}"
    try:
        process.wait_ready(lambda: _answers(url), timeout=60, message="moto_server answering")
        server = S3Server(url=url, process=process)
        server.create_user()
        yield server
    finally:
        process.stop()
