"""Test support lives in one place (tests/support/): no test module defines its own ``wait_for``,
``free_port`` or polling loop, starts subprocesses without the harness, or sleeps to wait.

A sleep that is part of what a test does (a client pacing its requests, a fake replica taking
its time to load) stays, with ``# pacing:`` and the reason on the same line.
"""

from __future__ import annotations

import re
from pathlib import Path

TESTS = Path(__file__).resolve().parent
SUPPORT = TESTS / "support"
PACING = "# pacing:"

RULES: dict[str, re.Pattern[str]] = {
    "a wait/poll helper of its own (use tests.support.waiting.wait_for)": re.compile(
        r"\bdef\s+(wait_for\w*|poll\w*|_poll\w*|_wait\w*)\s*\("
    ),
    "a free-port helper of its own (use tests.support.ports.free_port)": re.compile(r"\bdef\s+_?free_ports?\s*\("),
    "a subprocess outside the harness (use tests.support.processes.Process)": re.compile(r"\bsubprocess\.Popen\b"),
}
SLEEP = re.compile(r"\b(time\.sleep|asyncio\.sleep|wait_for_timeout)\s*\(|\bfrom\s+time\s+import\s+.*\bsleep\b")


def violations(path: Path, text: str) -> list[str]:
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        where = f"{path}:{number}: {line.strip()}"
        found += [f"{where}  <- {what}" for what, pattern in RULES.items() if pattern.search(line)]
        if SLEEP.search(line) and PACING not in line:
            found.append(f"{where}  <- a sleep used as a wait (poll with wait_for, or mark '{PACING} why')")
    return found


def test_the_rules_catch_what_they_forbid() -> None:
    sample = "\n".join(
        [
            "def wait_for(p): ...",
            "async def _wait_ready(): ...",
            "def free_port(): ...",
            "proc = subprocess.Popen(argv)",
            "time.sleep(0.5)",
            "    await asyncio.sleep(1)",
            "page.wait_for_timeout(1500)",
            "from time import monotonic, sleep",
            "time.sleep(0.2)  # pacing: one request per 200 ms",
            "wait_for(lambda: ready(), 10, 'ready')",
        ]
    )
    assert len(violations(Path("sample.py"), sample)) == 8


def test_no_test_module_carries_its_own_waits_ports_processes_or_sleeps() -> None:
    modules = [path for path in sorted(TESTS.rglob("*.py")) if SUPPORT not in path.parents]
    assert len(modules) > 50  # the whole suite was scanned
    here = Path(__file__).resolve()
    found = [v for path in modules if path != here for v in violations(path.relative_to(TESTS), path.read_text())]
    assert found == [], "\n".join(found)
