"""Logs: JSON or plain lines through structlog for stdlib and structlog records alike, the
request id in every line of a request, credentials never written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

from console.logging import REDACTED, redact_secrets, scrub_text, secret_key
from tests.conftest import REPO_ROOT

SECRETS = ["hunter2-pw", "tok-9f8e7d", "s3cr3t-val", "ak-123456", "cr3d-blob", "bearer-abc.def"]

# Logs everything that could leak, the ways our code and the libraries log.
SCRIPT = textwrap.dedent(
    """
    import logging
    import django
    django.setup()
    import structlog
    from controlplane.core import request_id

    request_id.bind("req-1.a_b")
    stdlib = logging.getLogger("hangar.test")
    stdlib.info("stdlib %s", "formatted", extra={"password": "hunter2-pw", "deployment_id": 7})
    stdlib.warning("calling with Authorization: Bearer bearer-abc.def")
    structlog.get_logger("hangar.struct").info(
        "structured",
        token="tok-9f8e7d",
        prompt_tokens=12,
        headers={"Authorization": "Bearer bearer-abc.def", "X-Api-Key": "ak-123456"},
        target={"name": "gpu-box", "credentials": {"tls_key": "cr3d-blob"}},
        client_secret="s3cr3t-val",
    )
    try:
        raise RuntimeError("connect postgres://hangar:hunter2-pw@db/hangar failed")
    except RuntimeError:
        stdlib.exception("database down")
    structlog.contextvars.clear_contextvars()
    stdlib.info("outside a request")
    """
)


def run_logging(log_format: str) -> str:
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "console.settings.test",
        "HANGAR_LOG_FORMAT": log_format,
        "HANGAR_LOG_LEVEL": "INFO",
    }
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout + done.stderr


def test_json_lines_carry_the_fields_and_no_secret() -> None:
    output = run_logging("json")
    lines = [line for line in output.splitlines() if line.strip()]
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    assert len(records) == 5
    for record in records:
        assert {"timestamp", "level", "logger", "event"} <= record.keys()
        assert record["timestamp"].endswith("Z")
    stdlib, warning, structured, failure, outside = records
    assert stdlib == {**stdlib, "event": "stdlib formatted", "level": "info", "logger": "hangar.test"}
    assert stdlib["request_id"] == "req-1.a_b" and stdlib["deployment_id"] == 7
    assert stdlib["password"] == REDACTED
    assert warning["event"] == f"calling with Authorization: Bearer {REDACTED}"
    assert structured["token"] == REDACTED and structured["client_secret"] == REDACTED
    assert structured["prompt_tokens"] == 12  # a count, not a credential
    assert structured["headers"] == {"Authorization": REDACTED, "X-Api-Key": REDACTED}
    assert structured["target"] == {"name": "gpu-box", "credentials": REDACTED}
    assert failure["level"] == "error" and "RuntimeError" in failure["exception"]
    assert f"postgres://hangar:{REDACTED}@db/hangar" in failure["exception"]
    assert "request_id" not in outside
    for secret in SECRETS:
        assert secret not in output


def test_plain_lines_show_the_same_fields_without_secrets() -> None:
    output = run_logging("plain")
    with pytest.raises(ValueError):
        json.loads(output.splitlines()[0])
    assert "stdlib formatted" in output and "request_id=req-1.a_b" in output and "deployment_id=7" in output
    assert "Traceback" in output
    for secret in SECRETS:
        assert secret not in output


def test_an_unknown_log_format_stops_the_start_with_a_clear_message() -> None:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "console.settings.production", "HANGAR_LOG_FORMAT": "xml"}
    done = subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "HANGAR_LOG_FORMAT='xml' must be one of ['json', 'plain']" in done.stderr


@pytest.mark.parametrize(
    "name",
    [
        "password",
        "db_password",
        "token",
        "access_token",
        "refresh-token",
        "Authorization",
        "authorization",
        "api_key",
        "X-Api-Key",
        "apiKey",
        "client_secret",
        "SECRET_KEY",
        "credentials",
        "tls_key",
        "ssh_key",
        "kubeconfig",
        "cookie",
    ],
)
def test_credential_names_are_recognised(name: str) -> None:
    assert secret_key(name)


@pytest.mark.parametrize(
    "name", ["event", "prompt_tokens", "completion_tokens", "max_tokens", "key_id", "keyboard", "deployment_id"]
)
def test_ordinary_names_are_kept(name: str) -> None:
    assert not secret_key(name)


def test_redaction_reaches_nested_values_and_text() -> None:
    event = redact_secrets(
        None,
        "info",
        {
            "event": "sent hgr_ABCDEFGHIJKL_s3cretpart0123456789 to redis://:pw@cache:6379/0",
            "requests": [{"headers": {"authorization": "Bearer x"}, "status": 200}],
            "_record": object(),
        },
    )
    assert event["event"] == f"sent hgr_ABCDEFGHIJKL_{REDACTED} to redis://:{REDACTED}@cache:6379/0"
    assert event["requests"] == [{"headers": {"authorization": REDACTED}, "status": 200}]
    assert scrub_text("Basic dXNlcjpwYXNz") == f"Basic {REDACTED}"
