"""The dashboard's upload page: operators and up open it; it lists only the tenant's open uploads,
with what the server holds of each, and the limits the page's script sends by. The script itself
runs in a real Chromium in tests/e2e/test_model_store_browser.py."""

from __future__ import annotations

from typing import Any

import pytest
from django.urls import reverse

from controlplane.catalog import uploads
from controlplane.core.context import SYSTEM
from tests.factories import TenantFactory

pytestmark = pytest.mark.django_db

FILES = [{"name": "model.safetensors", "size": 4096, "sha256": "a" * 64}]


@pytest.fixture(autouse=True)
def _store(settings: Any, tmp_path: Any) -> None:
    settings.HANGAR_MODEL_STORE_DIR = str(tmp_path / "store")
    settings.HANGAR_UPLOAD_CHUNK_BYTES = 65536


def test_viewers_may_not_upload(login: Any, team: dict[str, Any]) -> None:
    answer = login(team["viewer"]).get(reverse("dashboard:model-upload"))
    assert answer.status_code == 403
    assert 'id="upload-link"' not in login(team["viewer"]).get(reverse("dashboard:models")).content.decode()


def test_the_page_lists_the_tenants_open_uploads_with_bytes_received(login: Any, team: dict[str, Any]) -> None:
    mine = uploads.upload_create(actor=SYSTEM, tenant=team["tenant"], name="half-sent", files=FILES)
    uploads.upload_chunk(upload=mine, name="model.safetensors", offset=0, length=1024, stream=_Bytes(1024))
    uploads.upload_create(actor=SYSTEM, tenant=TenantFactory(), name="someone-elses", files=FILES)

    client = login(team["operator"])
    assert 'id="upload-link"' in client.get(reverse("dashboard:models")).content.decode()
    answer = client.get(reverse("dashboard:model-upload"))
    assert answer.status_code == 200
    content = answer.content.decode()
    assert f'data-upload="{mine.pk}"' in content and "half-sent" in content
    assert "1.0\xa0KB of 4.0\xa0KB" in content
    assert "someone-elses" not in content
    assert 'data-chunk-bytes="65536"' in content
    assert f'data-tenant="{team["tenant"].slug}"' in content
    assert 'data-api="/api/v1/uploads/"' in content
    assert "hangar/upload.js" in content


class _Bytes:
    """A request body stream of ``n`` zero bytes, read in pieces as the service reads it."""

    def __init__(self, n: int) -> None:
        self.left = n

    def read(self, size: int = -1) -> bytes:
        take = self.left if size < 0 else min(size, self.left)
        self.left -= take
        return b"\0" * take
