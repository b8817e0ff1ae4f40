"""ASGI entry point: HTTP (dashboard, REST API, gateway) and websockets on one server.

The gateway's paths (``/v1/*`` and ``/metrics``) and the ASGI lifespan go to the gateway's
own ASGI app before Django, so no Django middleware, session or CSRF code runs on the serving
path; everything else goes to Django (HTTP) or Channels (websockets).
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "console.settings.local")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402  (needs the app registry)
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from console.heap import freeze_startup_heap  # noqa: E402
from console.routing import websocket_urlpatterns  # noqa: E402
from controlplane.core.api import BodySizeLimit  # noqa: E402
from controlplane.gateway.app import route_http  # noqa: E402

application = route_http(
    ProtocolTypeRouter(
        {
            "http": BodySizeLimit(django_asgi_app),  # 413 for chunked bodies too
            "websocket": AllowedHostsOriginValidator(AuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
        }
    )
)
# Last: everything above is start-up heap that full collections need not walk again.
freeze_startup_heap()
