"""Logging of every Django process (web, worker, beat): structlog renders every record.

``HANGAR_LOG_FORMAT=json`` writes one JSON object per line (``timestamp``, ``level``,
``logger``, ``event``, ``request_id`` when one is bound, and any other bound context);
``plain`` writes the same fields as one readable line. Records from the standard library's
``logging`` (Django, Celery, uvicorn, our own modules) and from ``structlog.get_logger()``
go through the same processors and renderer (structlog's ``ProcessorFormatter``).

Secrets never reach the output: ``redact_secrets`` replaces the value of every key named like
a credential (at any depth) and scrubs bearer tokens, Hangar keys and URL passwords out of
message text.

Settings wire it in with ``LOGGING = logging_config(format, level)`` and
``LOGGING_CONFIG = "console.logging.configure"``; Celery is told to leave logging alone
(``console.celery``). This module must import without Django settings (settings import it).
"""

from __future__ import annotations

import functools
import itertools
import logging.config
import re
from collections.abc import Mapping
from typing import Any

import structlog
from structlog.typing import EventDict, Processor

FORMATS = {"json", "plain"}
REDACTED = "[REDACTED]"

# A key is secret when one of its words (split on _ - . and case changes) is one of these,
# e.g. ``password``, ``api_key``, ``X-Api-Key``, ``client_secret``, ``Authorization``,
# ``access_token``, ``credentials``; ``prompt_tokens`` (a count) is not.
_SECRET_WORDS = {
    "token",
    "password",
    "passwd",
    "secret",
    "secrets",
    "authorization",
    "credential",
    "credentials",
    "cookie",
    "apikey",
    "kubeconfig",
    "pepper",
}
_SECRET_PAIRS = {("api", "key"), ("private", "key"), ("ssh", "key"), ("tls", "key"), ("secret", "key")}
_WORD_SPLIT = re.compile(r"[_\-.\s]+|(?<=[a-z0-9])(?=[A-Z])")
# Secrets inside free text: bearer credentials, Hangar API keys/access tokens
# (``hgr_<key id>_<secret>``, ``hgp_...``: the key id stays, it identifies without granting),
# and passwords in URLs (``postgres://user:password@host``).
_TEXT_SCRUBS = (
    (re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+"), r"\1 " + REDACTED),
    (re.compile(r"\b(hg[a-z]_[A-Za-z0-9]{12}_)[A-Za-z0-9]+"), r"\1" + REDACTED),
    (re.compile(r"(\b[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s/]+@"), r"\1" + REDACTED + "@"),
)
_MAX_DEPTH = 6


@functools.lru_cache(maxsize=4096)
def secret_key(name: str) -> bool:
    """Whether a field of this name holds a credential (its value is never logged)."""
    words = [w.lower() for w in _WORD_SPLIT.split(name) if w]
    if any(w in _SECRET_WORDS for w in words):
        return True
    return any(pair in _SECRET_PAIRS for pair in itertools.pairwise(words))


def scrub_text(text: str) -> str:
    lowered = text.lower()
    # The regexes only where they can match: most log text has none of these.
    if "bearer" in lowered or "basic" in lowered or "hg" in lowered or "://" in lowered:
        for pattern, replacement in _TEXT_SCRUBS:
            text = pattern.sub(replacement, text)
    return text


def _redact(value: Any, depth: int) -> Any:
    if isinstance(value, str):
        return scrub_text(value)
    if depth >= _MAX_DEPTH:
        return value
    if isinstance(value, Mapping):
        return {
            k: (REDACTED if isinstance(k, str) and secret_key(k) else _redact(v, depth + 1)) for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_redact(v, depth + 1) for v in value]
    return value


def redact_secrets(_logger: Any, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: no credential leaves through a log line, whatever the caller passed."""
    for key, value in list(event_dict.items()):
        if key.startswith("_"):  # structlog's own bookkeeping (the stdlib record, ...)
            continue
        if secret_key(key):
            event_dict[key] = REDACTED
        else:
            event_dict[key] = _redact(value, 0)
    return event_dict


_LEADING = ("timestamp", "level", "logger", "event", "request_id")


def _leading_fields_first(_logger: Any, _method: str, event_dict: EventDict) -> EventDict:
    """Readers (and ``grep``) find the same fields at the start of every line."""
    ordered = {key: event_dict.pop(key) for key in _LEADING if key in event_dict}
    ordered.update(event_dict)
    return ordered


def _shared_processors() -> list[Processor]:
    """What every record gets, whether it came from structlog or from the stdlib."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
        structlog.processors.StackInfoRenderer(),
        redact_secrets,
    ]


def formatter(renderer: str = "json") -> structlog.stdlib.ProcessorFormatter:
    """The ``logging.Formatter`` of every handler (``LOGGING["formatters"]`` builds it by name)."""
    if renderer not in FORMATS:
        raise ValueError(f"log format {renderer!r} must be one of {sorted(FORMATS)}")
    final: Processor
    if renderer == "json":
        final = structlog.processors.JSONRenderer(default=str)
    else:
        final = structlog.dev.ConsoleRenderer(
            colors=False, sort_keys=False, pad_event_to=0, exception_formatter=structlog.dev.plain_traceback
        )
    return structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[structlog.stdlib.ExtraAdder(), *_shared_processors()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            redact_secrets,  # again: tracebacks are text only now
            _leading_fields_first,
            final,
        ],
    )


def logging_config(renderer: str, level: str) -> dict[str, Any]:
    """The ``LOGGING`` dict: one stream handler on the root logger, rendered by ``formatter``."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"hangar": {"()": "console.logging.formatter", "renderer": renderer}},
        "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "hangar"}},
        "root": {"handlers": ["console"], "level": level},
        "loggers": {
            "django.db.backends": {"level": "INFO"},
            # httpx logs every request at INFO: the reconciler's /health polls would drown the log.
            "httpx": {"level": "WARNING"},
            # uvicorn installs handlers of its own before the app loads; send its records
            # (start-up, errors, access log) through ours instead.
            "uvicorn": {"handlers": [], "propagate": True},
            "uvicorn.error": {"handlers": [], "propagate": True},
            "uvicorn.access": {"handlers": [], "propagate": True},
        },
    }


def configure(config: dict[str, Any]) -> None:
    """``LOGGING_CONFIG``: apply ``LOGGING`` and make ``structlog.get_logger()`` use it."""
    logging.config.dictConfig(config)
    logging.captureWarnings(True)  # warnings too become log lines (logger ``py.warnings``), not stray text
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.stdlib.PositionalArgumentsFormatter(),
            *_shared_processors(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
