"""The bearer credential a replica demands of everyone who calls its API.

A replica answers ``/v1/*`` and ``/metrics`` only to callers that present its deployment's
token, so whoever reaches a replica's port directly cannot skip the gateway's keys, scopes,
limits, budgets and metering. The token is derived on demand, never stored: HMAC-SHA256 keyed
with a key derived from ``SECRET_KEY`` for this one purpose, over the installation's name and
the deployment id. The reconciler hands it to the driver (which hands it to the replica), the
gateway and the metrics scraper compute the same value. Every replica of a deployment shares
it; another deployment's, or another installation's, token is refused.

Rotating ``SECRET_KEY`` changes every token: Kubernetes replicas roll by themselves (the pod
template carries a digest of the token); restart local and Docker deployments.
"""

from __future__ import annotations

import base64

from django.utils.crypto import salted_hmac

from controlplane.core.instance import instance_name

# Names this derivation: a new scheme gets a new context, so its tokens never collide with v1's.
CONTEXT = "hangar.replica-token.v1"


def replica_token(deployment_id: int) -> str:
    """The token that the replicas of deployment ``deployment_id`` require (43 url-safe characters)."""
    digest = salted_hmac(CONTEXT, f"{instance_name()}:{int(deployment_id)}", algorithm="sha256").digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")
