"""Keep the garbage collector's full collections short in long-running web processes.

A web process holds a large, long-lived heap after start-up (Django, DRF, the URL
configuration with every view and serializer, the OpenAPI machinery: about 190,000 tracked
objects). CPython's full (generation 2) collection walks all of it, and under list-page load it
ran about once every 15 requests and took 200-300 ms on this machine kind: that pause, not the
query or the serializer, was the p99 of every list page (``bench/list_pages.py``).

``gc.freeze()`` moves everything alive at start-up into a permanent generation that collections
skip; objects created later (requests) are still collected as before. The same technique is
used by Instagram's Django fleet and documented for pre-fork servers in the ``gc`` module.
"""

from __future__ import annotations

import gc


def freeze_startup_heap() -> int:
    """Import what the first request would (the URL configuration and every view), collect once,
    then move every surviving object out of the collector's way. Returns the objects frozen."""
    from django.urls import get_resolver

    get_resolver().url_patterns  # noqa: B018  (imports every view, serializer and schema class)
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
