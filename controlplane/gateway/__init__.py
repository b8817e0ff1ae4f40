"""The OpenAI-compatible serving gateway (``/v1/*`` on the console's ASGI server).

Wiring: ``console.asgi.application = route_http(<Channels/Django router>)``. ``route_http``
sends HTTP paths starting with ``/v1/`` and ``GET /metrics`` (and the ASGI lifespan) to
``controlplane.gateway.app.gateway`` before any Django code runs; everything else goes on to
Django and Channels unchanged.

Using it: any OpenAI client with ``base_url=<console>/v1`` and an API key from
``controlplane.keys.services.api_key_create`` (``Authorization: Bearer hgr_...``). Keys need
the ``inference`` scope for completions, ``embeddings`` for ``POST /v1/embeddings`` (models whose
task is ``embed``) and ``models:read`` for ``GET /v1/models``.

Modules: ``app`` (ASGI app, proxying), ``auth`` (keys, cache, revocation listener), ``limits``
(GCRA rate limits and budgets in Redis, per-process fallback), ``routing`` (routing table,
least-loaded replica choice, passive health), ``metering`` (batched usage and timestamps),
``requests`` (validation), ``embeddings`` (its validation and the task rule), ``errors`` (OpenAI error shape), ``metrics`` (Prometheus),
``selectors``/``services`` (database reads and writes), ``conf`` (``HANGAR_GATEWAY_*``).
"""
