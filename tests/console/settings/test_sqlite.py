"""The embedded default's SQLite: WAL, IMMEDIATE transactions and a busy timeout, so the web,
worker and beat processes sharing one file wait for each other instead of failing with
"database is locked". The end-to-end check under load is tests/console/test_quickstart_sqlite.py."""

from __future__ import annotations

import json

from tests.console.settings.test_declarations import run_python

PRAGMAS = """
import json, django
django.setup()
from django.db import connection
with connection.cursor() as cursor:
    found = {p: cursor.execute(f"PRAGMA {p}").fetchone()[0] for p in ("journal_mode", "synchronous", "busy_timeout")}
print(json.dumps(found | {"transaction_mode": connection.transaction_mode}))
"""

# Two threads, two connections: one holds a write transaction for a while; the other opens a
# transaction that reads, then writes. With deferred transactions the second one's lock upgrade
# fails at once ("database is locked", the busy timeout does not apply to it); with IMMEDIATE
# it waits for the first to commit, then reads what the first wrote.
READ_THEN_WRITE = """
import json, threading, time, django
django.setup()
from django.db import connection, transaction
with connection.cursor() as cursor:
    cursor.execute("CREATE TABLE counter (n INTEGER)")
    cursor.execute("INSERT INTO counter VALUES (0)")
holding = threading.Event()
errors = []

def slow_writer():
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("UPDATE counter SET n = n + 1")
            holding.set()
            time.sleep(1.0)  # pacing: the lock is held this long, on purpose: the other thread must wait
    except Exception as exc:
        errors.append(repr(exc))
    finally:
        holding.set()
        connection.close()

def read_then_write():
    holding.wait(10)
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            n = cursor.execute("SELECT n FROM counter").fetchone()[0]
            cursor.execute("UPDATE counter SET n = %s", [n + 10])
    except Exception as exc:
        errors.append(repr(exc))
    finally:
        connection.close()

threads = [threading.Thread(target=slow_writer), threading.Thread(target=read_then_write)]
for t in threads:
    t.start()
for t in threads:
    t.join()
with connection.cursor() as cursor:
    print(json.dumps({"n": cursor.execute("SELECT n FROM counter").fetchone()[0], "errors": errors}))
"""


def sqlite_env(tmp_path) -> dict[str, str]:
    return {"DATABASE_URL": f"sqlite:///{tmp_path / 'hangar.sqlite3'}", "HANGAR_DATA_DIR": str(tmp_path)}


def test_sqlite_connections_use_wal_immediate_transactions_and_a_busy_timeout(tmp_path) -> None:
    result = run_python(PRAGMAS, sqlite_env(tmp_path) | {"HANGAR_SQLITE_BUSY_TIMEOUT": "12"})
    assert result.returncode == 0, result.stderr[-2000:]
    found = json.loads(result.stdout)
    assert found == {"journal_mode": "wal", "synchronous": 1, "busy_timeout": 12000, "transaction_mode": "IMMEDIATE"}


def test_a_transaction_that_reads_then_writes_waits_for_another_writer(tmp_path) -> None:
    result = run_python(READ_THEN_WRITE, sqlite_env(tmp_path))
    assert result.returncode == 0, result.stderr[-2000:]
    # Both committed, the second after the first: 0 + 1, then + 10.
    assert json.loads(result.stdout) == {"n": 11, "errors": []}
