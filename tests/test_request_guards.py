"""foresight_site.request_guards: NUL characters refused before any view or database sees them."""
from __future__ import annotations

import pytest

from trading import services
from trading.models import AuditEvent, Kernel

pytestmark = pytest.mark.django_db


@pytest.fixture
def token(django_user_model):
    user = django_user_model.objects.create_superuser("root", "root@localhost", "pw")
    return services.token_create(user=user, name="t")[1]


def test_a_nul_in_a_query_string_is_a_400_json_not_a_database_error(client, token):
    response = client.get("/api/audit", {"command_id": "a\x00b"}, HTTP_AUTHORIZATION=f"Bearer {token}")
    assert response.status_code == 400
    assert response.json() == {"detail": "NUL characters are not accepted"}
    clean = client.get("/api/audit", {"command_id": "ab"}, HTTP_AUTHORIZATION=f"Bearer {token}")
    assert clean.status_code == 200


def test_a_nul_in_an_api_json_body_is_refused_but_never_in_a_halt(client, token, tmp_path):
    Kernel.objects.create(name="k", state_dir=str(tmp_path))
    refused = client.post("/api/tokens", data='{"name": "a\\u0000b"}', content_type="application/json",
                          HTTP_AUTHORIZATION=f"Bearer {token}")
    assert refused.status_code == 400 and refused.json()["detail"] == "NUL characters are not accepted"
    halted = client.post("/api/kernels/k/halt", data='{"reason": "bad\\u0000feed"}',
                         content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {token}")
    assert halted.status_code in (200, 202), halted.content
    assert AuditEvent.objects.filter(action="halt.engaged", kernel_name="k").exists()
