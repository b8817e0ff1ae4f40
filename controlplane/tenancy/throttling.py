"""REST API throttles per user and per personal access token, counted in Redis (Django's cache).

DRF's own ``SimpleRateThrottle`` keeps a list of timestamps per client and writes it back after
reading it: two web processes serving one client at the same moment both pass, and the list
grows with the rate. These count instead: one atomic ``INCR`` per request in a fixed window
plus the previous window's count weighted by how much of it still overlaps the sliding window
(the estimate Cloudflare and others use), so every web process shares one count and a
client never gets much more than its rate in any window. A refused request is not counted.

Rates are settings (``HANGAR_API_RATE_USER``, ``HANGAR_API_RATE_TOKEN``, DRF's ``num/period``).
A refusal is a 429 with ``Retry-After`` and a JSON body (``controlplane.core.api.exception_handler``).
If Redis cannot be reached the request is let through: the API must not depend on the
throttle's store more than on the database itself.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

from django.conf import settings
from django.core.cache import cache
from rest_framework.request import Request
from rest_framework.throttling import SimpleRateThrottle

from controlplane.tenancy.models import AccessToken

logger = logging.getLogger(__name__)


class WindowRateThrottle(SimpleRateThrottle):
    """A sliding-window estimate from two fixed-window counters (``cache.incr``, atomic in Redis)."""

    cache = cache
    cache_format = "throttle:%(scope)s:%(ident)s"
    num_requests: int
    duration: int

    def allow_request(self, request: Request, view: Any) -> bool:
        if self.rate is None:
            return True
        self.key = self.get_cache_key(request, view)
        if self.key is None:
            return True
        try:
            return self._allow(self.key, time.time())
        except Exception as exc:  # the cache backend's connection errors vary by client library
            logger.warning("API throttle store unavailable, request let through: %s", type(exc).__name__)
            return True

    def _allow(self, key: str, now: float) -> bool:
        duration = float(self.duration)
        window = math.floor(now / duration)
        current_key, previous_key = f"{key}:{window}", f"{key}:{window - 1}"
        counts = self.cache.get_many([current_key, previous_key])
        current = int(counts.get(current_key, 0))
        previous = int(counts.get(previous_key, 0))
        overlap = 1.0 - (now - window * duration) / duration  # share of the previous window still in view
        if previous * overlap + current >= self.num_requests:
            self._wait = self._seconds_until_allowed(previous, current, overlap, duration)
            return False
        # add() then incr(): the first request of a window creates the counter that outlives it
        # by one window (the next window weighs it); incr is atomic however many processes count.
        if not self.cache.add(current_key, 1, timeout=int(2 * duration) + 1):
            self.cache.incr(current_key)
        return True

    def _seconds_until_allowed(self, previous: int, current: int, overlap: float, duration: float) -> float:
        """How long until the estimate ``previous * (overlap - t/d) + current`` drops below the limit."""
        limit = self.num_requests
        until_window_end = duration * overlap
        if current < limit:  # the previous window's weight fades at previous/d per second
            return float(min(until_window_end, duration * (previous * overlap + current - limit) / previous))
        # Full on its own: wait for the next window, where this one's count fades in turn.
        return float(until_window_end + duration * (1.0 - limit / current))

    def wait(self) -> float | None:
        # Whole seconds, rounded past the moment the estimate drops: a client that waits exactly
        # ``Retry-After`` is let in.
        return float(math.floor(getattr(self, "_wait", self.duration)) + 1)


class UserRateThrottle(WindowRateThrottle):
    """Every request of a user, whether by session or by any of their tokens."""

    scope = "user"

    def get_rate(self) -> str | None:
        return str(settings.HANGAR_API_RATE_USER)  # read per request: tests and reloads change it

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        user = getattr(request, "user", None)
        if user is None or not getattr(user, "is_authenticated", False):
            return None  # anonymous requests are refused with 401 before they cost anything
        return self.cache_format % {"scope": self.scope, "ident": user.pk}


class TokenRateThrottle(WindowRateThrottle):
    """Every request made with one personal access token."""

    scope = "token"

    def get_rate(self) -> str | None:
        return str(settings.HANGAR_API_RATE_TOKEN)

    def get_cache_key(self, request: Request, view: Any) -> str | None:
        token = getattr(request, "auth", None)
        if not isinstance(token, AccessToken):
            return None
        return self.cache_format % {"scope": self.scope, "ident": token.pk}
