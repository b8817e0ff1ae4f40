"""Every setting is read through the strict parser, declared with a description, and listed in
the README's configuration table, which ``manage.py settings_table`` writes."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from console.settings import table
from console.settings.env import DECLARED, Env, ImproperlyConfiguredEnv
from tests.conftest import REPO_ROOT

CHECK_COMMAND = "python manage.py settings_table"


def run_python(code: str, values: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``code`` with only ``values`` among Hangar's variables, as a fresh start-up would."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("HANGAR_", "DJANGO_", "DATABASE_", "CELERY_"))}
    clean.update({"DJANGO_SETTINGS_MODULE": "console.settings.local", "PYTHONPATH": str(REPO_ROOT)} | values)
    return subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, env=clean, capture_output=True, text=True, timeout=120
    )


def test_readme_configuration_table_matches_the_settings() -> None:
    readme = table.README.read_text()
    assert table.replaced(readme, table.render()) == readme, (
        f"README.md's configuration table is out of date: run `{CHECK_COMMAND}` and commit README.md."
    )


def test_the_table_does_not_depend_on_the_environment_it_is_made_in() -> None:
    """Defaults computed from other values (paths, URLs) are shown as formulas, never as this
    machine's values; so the check gives the same answer in any environment and settings module."""
    values = {
        "HANGAR_DATA_DIR": "/srv/elsewhere",
        "REDIS_URL": "redis://cache.example:6390/3",
        "HANGAR_LOG_FORMAT": "json",
        "HANGAR_GATEWAY_COLD_START_TIMEOUT": "7",
        "DJANGO_SETTINGS_MODULE": "console.settings.local",
    }
    result = run_python("from console.settings import table; print(table.render())", values)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == table.render()


def test_settings_table_command_checks_and_rewrites(tmp_path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text(f"# Hangar\n\n{table.START}\n| stale |\n{table.END}\n\nafter\n")
    with pytest.raises(CommandError, match=re.escape(f"run `{CHECK_COMMAND}`")):
        call_command("settings_table", "--check", readme=readme)
    call_command("settings_table", readme=readme, stdout=io.StringIO())
    text = readme.read_text()
    assert text.startswith("# Hangar\n\n") and text.endswith(f"{table.END}\n\nafter\n")
    assert "| `HANGAR_GATEWAY_COLD_START_TIMEOUT` | number, 0 to 3600 | `60` |" in text
    call_command("settings_table", "--check", readme=readme, stdout=io.StringIO())


def test_settings_table_command_needs_the_markers(tmp_path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# Hangar without a table\n")
    with pytest.raises(CommandError, match="README.md needs exactly one"):
        call_command("settings_table", readme=readme)
    assert readme.read_text() == "# Hangar without a table\n"


def test_every_declared_setting_is_described_typed_and_in_the_readme() -> None:
    readme = table.README.read_text()
    names = [item.name for item in table.declared()]
    assert len(names) == len(set(names))
    for item in DECLARED.values():
        assert item.help and item.kind and item.default, item
        assert f"| `{item.name}` |" in readme


def test_a_setting_without_description_is_refused() -> None:
    with pytest.raises(ImproperlyConfiguredEnv, match="HANGAR_UNDESCRIBED is read without a description"):
        Env({}, declare=True).int("HANGAR_UNDESCRIBED", 1)
    assert "HANGAR_UNDESCRIBED" not in DECLARED


# Reading a setting around the parser: a default in code that no variable can change, and that
# the README's table cannot list.
AROUND_THE_PARSER = re.compile(
    r"getattr\(\s*settings\s*,|os\.environ(\.get)?\(?\s*\[?\s*[\"'](HANGAR_|DATABASE_URL|REDIS_URL)"
)


def test_no_setting_is_read_around_the_parser() -> None:
    offenders = []
    for package in ("console", "controlplane", "workers"):
        for path in (REPO_ROOT / package).rglob("*.py"):
            if "settings" in path.relative_to(REPO_ROOT).parts[:2] or "migrations" in path.parts:
                continue
            for number, line in enumerate(path.read_text().splitlines(), start=1):
                if AROUND_THE_PARSER.search(line):
                    offenders.append(f"{path.relative_to(REPO_ROOT)}:{number}: {line.strip()}")
    assert not offenders, "read these through console/settings/env.py instead:\n" + "\n".join(offenders)


def test_gateway_tunables_come_from_the_environment() -> None:
    values = {
        "HANGAR_GATEWAY_COLD_START_TIMEOUT": "12.5",
        "HANGAR_GATEWAY_KEY_CACHE_SECONDS": "7",
        "HANGAR_GATEWAY_RETRY_AFTER_SECONDS": "9",
        "HANGAR_GATEWAY_REDIS_PREFIX": "site-b:gw:",
    }
    code = (
        "import django; django.setup(); from controlplane.gateway.conf import load; c = load(); "
        "print(c.cold_start_timeout, c.key_cache_seconds, c.retry_after_seconds, c.redis_prefix)"
    )
    result = run_python(code, values)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["12.5", "7.0", "9", "site-b:gw:"]


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("HANGAR_GATEWAY_COLD_START_TIMEOUT", "soon", "HANGAR_GATEWAY_COLD_START_TIMEOUT='soon' is not a number"),
        ("HANGAR_GATEWAY_KEY_CACHE_SECONDS", "120", "HANGAR_GATEWAY_KEY_CACHE_SECONDS=120.0 is above the maximum 60"),
        ("HANGAR_GATEWAY_PROCESSES", "0", "HANGAR_GATEWAY_PROCESSES=0 is below the minimum 1"),
        ("HANGAR_SQLITE_BUSY_TIMEOUT", "0", "HANGAR_SQLITE_BUSY_TIMEOUT=0.0 is below the minimum 1"),
        ("HANGAR_PORT", "80000", "HANGAR_PORT=80000 is above the maximum 65535"),
    ],
)
def test_bad_tunables_stop_start_up_naming_the_variable(variable: str, value: str, message: str) -> None:
    result = run_python("import console.settings.local", {variable: value})
    assert result.returncode != 0
    assert message in result.stderr, result.stderr[-2000:]
