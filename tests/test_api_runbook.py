"""GET /paper/health, /paper/alerts, /paper/promotion: the runbook's computations over the
artifact root, the same functions the operator commands call."""
from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.contrib.auth.models import User

from paper import runbook
from paper.tokens import api_token_create
from tests.runbook_fixtures import paper_root_build

pytestmark = pytest.mark.django_db


@pytest.fixture
def api(client, settings, tmp_path):
    user = User.objects.create_user("ops")
    _, token = api_token_create(user=user)
    root = settings.OUTPUTS_DIR / "paper_sessions"
    return client, {"HTTP_AUTHORIZATION": f"Bearer {token}"}, root


def test_an_empty_root_is_healthy_and_quiet(api):
    client, auth, _ = api
    health = client.get("/paper/health", **auth).json()
    assert health["total"] == 0 and health["latest"] is None
    assert client.get("/paper/alerts", **auth).json()["alerts"] == []


def test_the_api_serves_the_same_computations_as_the_runbook(api):
    client, auth, root = api
    paper_root_build(root)
    now = datetime.now(UTC)
    health = client.get("/paper/health", **auth).json()
    assert health["counts"] == runbook.health(root, now=now)["counts"]
    alerts = client.get("/paper/alerts", {"stale_minutes": 60}, **auth).json()
    assert {a["code"] for a in alerts["alerts"]} >= {"PAPER_SESSION_FAILED", "PAPER_SESSION_ABORTED"}
    promotion = client.get("/paper/promotion", {"min_sharpe": 0.1}, **auth).json()
    assert promotion["contract"]["min_sharpe"] == 0.1
    assert len(promotion["ready"]) + len(promotion["blocked"]) == len(runbook.sessions_scan(root))


@pytest.mark.parametrize("path,query", [
    ("/paper/alerts", {"stale_minutes": 0}),
    ("/paper/alerts", {"stale_minutes": "soon"}),
    ("/paper/promotion", {"max_drawdown": 35}),
])
def test_bad_thresholds_are_422(api, path, query):
    client, auth, _ = api
    assert client.get(path, query, **auth).status_code == 422


def test_these_paths_are_not_read_as_run_ids(api):
    client, auth, _ = api
    for path in ("/paper/health", "/paper/alerts", "/paper/promotion"):
        assert client.get(path, **auth).status_code == 200
