"""The playground in a real Chromium: the random-weights label, and the JSON-schema / tools panel.

The web process (``uvicorn console.asgi``: dashboard and gateway) runs against the test
database, with a Running deployment of the tiny model whose replica is a real runtime process.
The test checks that the demo model is labelled as random weights where a new user meets it
(model page, playground), that plain chat still streams through the real gateway, and that the
panel works end to end against the real runtime behind the real gateway: a JSON schema and a
named tool in one request go out as ``response_format``, ``tools``, ``tool_choice`` and
``parallel_tool_calls``, and the runtime's 400 (it refuses a response format on top of a forced
tool call) is shown; a named tool choice alone is answered with a tool call whose arguments are
valid for the function's schema, which the page renders; the tool's result goes back as a
``tool`` message, and with the JSON schema and tool choice ``none`` the answer is a document
valid for the schema, shown formatted. The model has random weights, so nothing is asserted
about what it says, only that constrained decoding keeps it valid: the schemas bound every
string and number so that a wandering model finishes well within ``max_tokens``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
from django.db import connection

from controlplane.deployments.choices import Phase, ReplicaState
from controlplane.tenancy.choices import Role
from tests.controlplane.gateway.conftest import Server
from tests.e2e.test_dashboard_browser import CHROMIUM, CHROMIUM_ARGS, PASSWORD, REPO_ROOT, ensure_frontend_built
from tests.factories import (
    ApiKeyFactory,
    DeploymentFactory,
    MembershipFactory,
    ModelFactory,
    ReplicaFactory,
    TenantFactory,
    UserFactory,
)
from tests.support.ports import free_port
from tests.support.processes import http_ok

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.timeout(600),
    pytest.mark.skipif(not CHROMIUM.exists(), reason="no /usr/bin/chromium"),
]

SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "maxLength": 20},
        "temperature": {"type": "integer", "minimum": -60, "maximum": 60},
    },
    "required": ["city", "temperature"],
    "additionalProperties": False,
}
WEATHER_PARAMETERS = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 12}},
    "required": ["city"],
    "additionalProperties": False,
}
TOOLS = [
    {
        "type": "function",
        "function": {"name": "get_weather", "description": "Weather in a city", "parameters": WEATHER_PARAMETERS},
    }
]


@pytest.fixture
def web(transactional_db: Any, tmp_path: Path, tiny_model_dir: Path) -> Iterator[dict[str, Any]]:
    """The web process on the test database and a runtime serving the tiny model as ``tiny-chat``."""
    ensure_frontend_built()
    s = connection.settings_dict
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "console.settings.test",
        "DATABASE_URL": f"postgres://{s['USER']}:{s['PASSWORD']}@{s['HOST']}:{s['PORT']}/{s['NAME']}",
        "HANGAR_DATA_DIR": str(tmp_path / "data"),
        "PYTHONUNBUFFERED": "1",
    }
    subprocess.run(
        [sys.executable, "manage.py", "collectstatic", "--noinput", "-v0"], cwd=REPO_ROOT, env=env, check=True
    )
    runtime_port, web_port = free_port(), free_port()
    runtime = Server(
        "runtime",
        [
            *[sys.executable, "-m", "workers.runtime", "--model", str(tiny_model_dir), "--port", str(runtime_port)],
            *["--served-model-name", "tiny-chat"],
        ],
        runtime_port,
        log_path=tmp_path / "runtime.log",
    ).serve("/health", 180)
    argv = [str(REPO_ROOT / ".venv" / "bin" / "uvicorn"), "console.asgi:application", "--port", str(web_port)]
    server = Server("web", argv, web_port, env=env, log_path=tmp_path / "web.log")
    try:
        server.start()
        server.wait_ready(lambda: http_ok(server.url + "/login/"), 60, "uvicorn answering", interval=0.2)
        runtime.wait_ready(lambda: http_ok(runtime.url + "/health"), 180, "/health answering 200", interval=0.2)
        yield {"base": server.url, "runtime": runtime.url}
    finally:
        server.stop()
        runtime.stop()


def log_in(page: Any, base: str) -> None:
    page.goto(base + "/login/")
    page.fill("#id_username", "olivia")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(base + "/")


def check_labels(page: Any, base: str, model_pk: int) -> None:
    """The demo model says what it is where a new user meets it."""
    from playwright.sync_api import expect

    page.goto(base + f"/models/{model_pk}/")
    expect(page.locator("h1 [data-random-weights]")).to_have_text("random weights")
    expect(page.locator("[data-random-weights-note]")).to_contain_text("not a fault")
    page.goto(base + "/playground/")
    page.select_option("#pg-model", "tiny-chat")
    expect(page.get_by_test_id("model-note")).to_contain_text("random weights")
    expect(page.get_by_test_id("model-note")).to_contain_text("gibberish by design, not a fault")
    page.select_option("#pg-model", "emb")
    expect(page.get_by_test_id("model-note")).to_contain_text("embedding model")


def check_plain_chat_streams(page: Any, base: str, secret: str) -> None:
    """Without the panel, chat streams through the real gateway and runtime, as before."""
    from playwright.sync_api import expect

    page.goto(base + "/playground/")
    page.select_option("#pg-model", "tiny-chat")
    page.fill("#pg-key", secret)
    page.fill("#pg-max", "8")
    page.fill("#pg-prompt", "Tell me about the harbor.")
    with page.expect_request("**/v1/chat/completions") as plain:
        page.click("#chat-send")
    expect(page.locator("#chat-status")).to_contain_text("chunks in", timeout=60_000)
    first = plain.value.post_data_json
    assert first["stream"] is True
    assert not {"response_format", "tools", "tool_choice"} & set(first)


def open_panel(page: Any, base: str, secret: str) -> None:
    """A fresh conversation with the JSON-schema / tools panel open."""
    page.goto(base + "/playground/")
    page.select_option("#pg-model", "tiny-chat")
    page.fill("#pg-key", secret)
    page.fill("#pg-max", "200")
    page.click("#pg-structured summary")


def ask_for_the_weather_tool(page: Any, base: str, secret: str, *, schema: bool) -> tuple[Any, dict[str, Any]]:
    """Send "Weather in Oslo?" with get_weather as the named tool choice (and, with ``schema``, a
    JSON schema too); returns the response and the request body the page sent."""
    open_panel(page, base, secret)
    if schema:
        page.select_option("#pg-format", "json_schema")
        page.fill("#pg-schema-name", "weather")
        page.fill("#pg-schema", json.dumps(SCHEMA))
    page.fill("#pg-tools", json.dumps(TOOLS))
    page.select_option("#pg-tool-choice", "function")
    page.fill("#pg-tool-name", "get_weather")
    page.fill("#pg-prompt", "Weather in Oslo?")
    with page.expect_response("**/v1/chat/completions", timeout=120_000) as answered:
        page.click("#chat-send")
    response = answered.value
    body = response.request.post_data_json
    assert body["tools"] == TOOLS and body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    return response, body


def the_weather_call(page: Any, response: Any) -> dict[str, Any]:
    """The answer is one get_weather call, valid for its parameters, rendered in the log."""
    from playwright.sync_api import expect

    assert response.status == 200, response.text()
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls", choice
    assert choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["function"]["name"] == "get_weather"
    jsonschema.validate(json.loads(call["function"]["arguments"]), WEATHER_PARAMETERS)
    expect(page.locator("#chat-status")).to_contain_text("(tool_calls)")
    expect(page.locator('#chat-log .tool-call[data-tool-call="get_weather"]')).to_contain_text("calls get_weather")
    return dict(call)


def check_schema_with_a_forced_tool_answers_with_the_call(page: Any, base: str, secret: str) -> None:
    """A JSON schema and a named tool go out in one request; the forced call is the answer."""
    response, body = ask_for_the_weather_tool(page, base, secret, schema=True)
    assert response.request.headers["authorization"] == f"Bearer {secret}"
    assert body["model"] == "tiny-chat" and body["stream"] is False
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "weather", "schema": SCHEMA, "strict": True},
    }
    assert body["parallel_tool_calls"] is True
    assert body["messages"] == [{"role": "user", "content": "Weather in Oslo?"}]
    # As OpenAI: the forced call is the answer (its arguments follow the function's parameters);
    # the response format shapes the content of a later turn.
    the_weather_call(page, response)


def check_named_tool_call(page: Any, base: str, secret: str) -> dict[str, Any]:
    """A named tool choice: the runtime's tool call, valid for the function's schema, is rendered."""
    response, body = ask_for_the_weather_tool(page, base, secret, schema=False)
    assert "response_format" not in body
    call = the_weather_call(page, response)
    rendered = page.locator('#chat-log .tool-call[data-tool-call="get_weather"]')
    assert json.loads(rendered.locator("pre").inner_text()) == json.loads(call["function"]["arguments"])
    return call


def check_tool_result_and_json_answer(page: Any, call: dict[str, Any]) -> None:
    """The next message is the tool's result; with tool choice none the answer follows the schema."""
    from playwright.sync_api import expect

    page.select_option("#pg-format", "json_schema")
    page.fill("#pg-schema-name", "weather")
    page.fill("#pg-schema", json.dumps(SCHEMA))
    page.select_option("#pg-tool-choice", "none")
    page.fill("#pg-prompt", "12 degrees and rain")
    with page.expect_response("**/v1/chat/completions", timeout=120_000) as answered:
        page.click("#chat-send")
    response = answered.value
    body = response.request.post_data_json
    assert body["tool_choice"] == "none"
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "weather", "schema": SCHEMA, "strict": True},
    }
    assert body["messages"][1] == {"role": "assistant", "content": None, "tool_calls": [call]}
    assert body["messages"][2] == {"role": "tool", "tool_call_id": call["id"], "content": "12 degrees and rain"}
    assert response.status == 200, response.text()
    choice = response.json()["choices"][0]
    assert choice["finish_reason"] == "stop", choice
    document = json.loads(choice["message"]["content"])
    jsonschema.validate(document, SCHEMA)

    expect(page.locator("#chat-status")).to_contain_text("(stop)")
    shown = page.locator('#chat-log pre.json[data-json="valid"]').last
    expect(shown).to_be_visible()
    assert json.loads(shown.inner_text()) == document


def check_bad_schema_is_not_sent(page: Any) -> None:
    from playwright.sync_api import expect

    sent: list[str] = []
    page.on("request", lambda request: sent.append(request.url) if "/v1/" in request.url else None)
    page.fill("#pg-schema", "{not json")
    page.fill("#pg-prompt", "again")
    page.click("#chat-send")
    expect(page.locator("#chat-status")).to_contain_text("the JSON schema is not valid JSON")
    assert sent == []


def test_playground_labels_random_weights_and_sends_schema_and_tools(
    web: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from playwright.sync_api import expect, sync_playwright

    tenant = TenantFactory(name="Acme", slug="acme")
    MembershipFactory(user=UserFactory(username="olivia"), tenant=tenant, role=Role.OWNER)
    demo = ModelFactory(tenant=tenant, name="tiny", random_weights=True)
    deployment = DeploymentFactory(tenant=tenant, model=demo, served_model_name="tiny-chat", phase=Phase.RUNNING)
    ReplicaFactory(deployment=deployment, endpoint=web["runtime"], state=ReplicaState.READY)
    embedder = ModelFactory(tenant=tenant, name="embedder", task="embed", pooling="mean")
    DeploymentFactory(tenant=tenant, model=embedder, served_model_name="emb", phase=Phase.RUNNING)
    secret = ApiKeyFactory(tenant=tenant).secret
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    base = web["base"]

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            expect.set_options(timeout=15_000)
            log_in(page, base)
            check_labels(page, base, demo.pk)
            check_plain_chat_streams(page, base, secret)
            check_schema_with_a_forced_tool_answers_with_the_call(page, base, secret)
            call = check_named_tool_call(page, base, secret)
            check_tool_result_and_json_answer(page, call)
            check_bad_schema_is_not_sent(page)
            shots = REPO_ROOT / "artifacts" / "screenshots"
            shots.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shots / "19-playground-tools.png"), full_page=True)
        finally:
            browser.close()
