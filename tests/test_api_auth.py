"""API auth: every operation refuses anonymous callers; tokens (Bearer, X-API-Key) and sessions with CSRF.

Also `manage.py create_api_token`, whose stdout must be the token and nothing else, and revoking
tokens: `GET /tokens`, `DELETE /tokens/{id}`, `manage.py revoke_api_token` and the admin action.
The matrix of every route by role is tests/test_auth_matrix.py.
"""
import hashlib
import io
import json
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.core.management import CommandError, call_command
from django.test import Client

from paper.models import ApiToken
from paper.tokens import api_token_create, api_token_revoke, api_token_verify

pytestmark = pytest.mark.django_db

EXPECTED_OPERATIONS = {
    ("POST", "/bots/halt-all"),
    ("GET", "/bots"), ("POST", "/bots"),
    ("GET", "/bots/{bot_id}"), ("PUT", "/bots/{bot_id}"), ("PATCH", "/bots/{bot_id}"), ("DELETE", "/bots/{bot_id}"),
    ("POST", "/bots/{bot_id}/backtests"), ("GET", "/bots/{bot_id}/backtests"),
    ("POST", "/bots/{bot_id}/paper"),
    ("POST", "/paper/stop-all"),
    ("GET", "/paper/health"), ("GET", "/paper/alerts"), ("GET", "/paper/promotion"),
    ("GET", "/paper"), ("GET", "/paper/{run_id}"), ("POST", "/paper/{run_id}/stop"),
    ("GET", "/paper/{run_id}/fills"), ("GET", "/paper/{run_id}/orders"),
    ("GET", "/paper/{run_id}/equity"), ("GET", "/paper/{run_id}/frames"),
    ("POST", "/kill-switch"), ("GET", "/kill-switch"), ("POST", "/kill-switch/rearm"),
    ("GET", "/tokens"), ("DELETE", "/tokens/{token_id}"),
}


def operations() -> list[tuple[str, str]]:
    import config.urls  # noqa: F401  (mounts the routers)
    from config.api import api

    schema = api.get_openapi_schema()
    return sorted((method.upper(), path) for path, methods in schema["paths"].items() for method in methods)


@pytest.fixture
def alice(db):
    return User.objects.create_user("alice", password="pw")


def call(client, method, path, **extra):
    url = path.replace("{bot_id}", "1").replace("{run_id}", "20990101T000000Z-deadbeef").replace("{token_id}", "1")
    return client.generic(method, url, data='{"starting_cash":100000,"duration_minutes":60}',
                          content_type="application/json", **extra)


def test_the_schema_lists_every_operation():
    assert set(operations()) == EXPECTED_OPERATIONS


@pytest.mark.parametrize("method,path", operations())
def test_every_operation_refuses_anonymous_callers(client, method, path):
    response = call(client, method, path)
    assert response.status_code == 401, (method, path, response.content)
    assert response.json()["code"] == "not_authenticated" and "Bearer" in response.json()["detail"]


@pytest.mark.parametrize("method,path", operations())
def test_every_operation_refuses_a_revoked_token(client, alice, method, path):
    token, raw = api_token_create(user=alice)
    api_token_revoke(token=token)
    assert call(client, method, path, HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 401


def test_an_anonymous_unsafe_request_is_401_not_a_csrf_403(alice):
    client = Client(enforce_csrf_checks=True)
    response = client.post("/kill-switch", data="", content_type="application/json")
    assert response.status_code == 401


@pytest.mark.parametrize("header", [
    "Bearer pt_not-a-real-token", "Token {raw}", "Bearer", "Basic YWxpY2U6cHc=", "Bearer " + "x" * 5000,
])
def test_a_wrong_token_or_scheme_is_401(client, alice, header):
    _, raw = api_token_create(user=alice)
    assert client.get("/kill-switch", HTTP_AUTHORIZATION=header.format(raw=raw)).status_code == 401


def test_a_bearer_token_and_an_x_api_key_both_work(client, alice):
    _, raw = api_token_create(user=alice)
    assert client.get("/kill-switch", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 200
    assert client.get("/kill-switch", HTTP_X_API_KEY=raw).status_code == 200


def test_a_token_of_an_inactive_user_is_refused(client, alice):
    _, raw = api_token_create(user=alice)
    User.objects.filter(pk=alice.pk).update(is_active=False)
    assert client.get("/kill-switch", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 401


def test_only_the_tokens_hash_is_stored(alice):
    token, raw = api_token_create(user=alice, name="ci")
    assert raw.startswith("pt_") and len(raw) > 40 and token.prefix == raw[:12]
    assert token.token_hash == hashlib.sha256(raw.encode()).hexdigest()
    assert not ApiToken.objects.filter(token_hash=raw).exists()


def test_last_used_at_is_written_at_most_once_a_minute(alice):
    token, raw = api_token_create(user=alice)
    assert api_token_verify(raw) == alice
    token.refresh_from_db()
    first = token.last_used_at
    assert first is not None
    api_token_verify(raw)
    token.refresh_from_db()
    assert token.last_used_at == first
    ApiToken.objects.filter(pk=token.pk).update(last_used_at=first - timedelta(minutes=2))
    api_token_verify(raw)
    token.refresh_from_db()
    assert token.last_used_at > first - timedelta(seconds=1)


def test_a_revoked_token_stays_revoked_from_its_first_revocation(alice):
    token, raw = api_token_create(user=alice)
    api_token_revoke(token=token)
    first = token.revoked_at
    api_token_revoke(token=token)
    assert token.revoked_at == first and api_token_verify(raw) is None


# --- browser sessions ------------------------------------------------------------------------------

@pytest.fixture
def browser(alice):
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    return client


def test_a_session_may_read_without_a_csrf_token(browser):
    assert browser.get("/kill-switch").status_code == 200


def test_a_session_post_without_a_csrf_token_is_403(browser):
    response = browser.post("/paper/stop-all", data="", content_type="application/json")
    assert response.status_code == 403
    assert response.json()["code"] == "forbidden" and "CSRF" in response.json()["detail"]


def test_a_session_post_with_the_csrf_token_succeeds(browser):
    browser.get("/admin/login/")  # any Django page that renders a form sets the csrftoken cookie
    csrf = browser.cookies["csrftoken"].value
    response = browser.post("/paper/stop-all", data="", content_type="application/json", HTTP_X_CSRFTOKEN=csrf)
    assert response.status_code == 200 and response.json()["reason"] == "operator_stop: stop-all by alice"


def test_a_token_needs_no_csrf_even_with_a_session_cookie(browser, alice):
    _, raw = api_token_create(user=alice)
    response = browser.post("/paper/stop-all", data="", content_type="application/json",
                            HTTP_AUTHORIZATION=f"Bearer {raw}")
    assert response.status_code == 200


# --- create_api_token --------------------------------------------------------------------------------

def test_create_api_token_prints_only_a_working_token(client, alice):
    out, err = io.StringIO(), io.StringIO()
    call_command("create_api_token", "alice", "--name", "ci", stdout=out, stderr=err)
    raw = out.getvalue().strip()
    assert out.getvalue() == raw + "\n" and raw.startswith("pt_")
    assert "alice" in err.getvalue()
    assert ApiToken.objects.get(user=alice).name == "ci"
    assert client.get("/bots", HTTP_AUTHORIZATION=f"Bearer {raw}").status_code == 200


def test_create_api_token_exits_2_for_an_unknown_user():
    with pytest.raises(CommandError) as exc:
        call_command("create_api_token", "nobody", stdout=io.StringIO())
    assert exc.value.returncode == 2 and "nobody" in str(exc.value)
    assert not ApiToken.objects.exists()


def test_the_docs_and_schema_are_served(client):
    assert client.get("/openapi.json").json()["info"]["title"] == "Paper trading API"
    assert client.get("/docs").status_code == 200


# --- revoking tokens: the API, the command, the admin --------------------------------------------------

@pytest.fixture
def bob(db):
    return User.objects.create_user("bob")


def bearer(raw):
    return {"HTTP_AUTHORIZATION": f"Bearer {raw}"}


def test_get_tokens_lists_only_the_callers_own_and_never_the_hash(client, alice, bob):
    mine, raw = api_token_create(user=alice, name="laptop")
    old, _ = api_token_create(user=alice, name="old")
    api_token_revoke(token=old)
    api_token_create(user=bob, name="bob's")
    body = client.get("/tokens", **bearer(raw)).json()
    assert body["count"] == 2 and [t["name"] for t in body["items"]] == ["old", "laptop"]
    listed = {t["name"]: t for t in body["items"]}
    assert set(listed["laptop"]) == {"id", "name", "prefix", "user", "created_at", "last_used_at", "revoked_at"}
    assert listed["laptop"]["prefix"] == raw[:12] and listed["laptop"]["user"] == "alice"
    assert listed["laptop"]["last_used_at"] and listed["laptop"]["revoked_at"] is None
    assert listed["old"]["revoked_at"] is not None
    assert mine.token_hash not in json.dumps(body) and raw not in json.dumps(body)


def test_delete_revokes_ones_own_token_idempotently(client, alice):
    _, raw = api_token_create(user=alice, name="main")
    spare, spare_raw = api_token_create(user=alice, name="spare")
    first = client.delete(f"/tokens/{spare.pk}", **bearer(raw))
    assert first.status_code == 200 and first.json()["revoked_at"]
    again = client.delete(f"/tokens/{spare.pk}", **bearer(raw))
    assert again.status_code == 200 and again.json()["revoked_at"] == first.json()["revoked_at"]
    assert client.get("/bots", **bearer(spare_raw)).status_code == 401
    assert client.get("/bots", **bearer(raw)).status_code == 200


def test_a_token_may_revoke_itself_and_is_refused_from_then_on(client, alice):
    token, raw = api_token_create(user=alice)
    assert client.delete(f"/tokens/{token.pk}", **bearer(raw)).status_code == 200
    assert client.get("/tokens", **bearer(raw)).status_code == 401


def test_someone_elses_token_is_404_to_an_operator_and_revocable_by_staff(client, alice, bob):
    _, alice_raw = api_token_create(user=alice)
    bobs, bob_raw = api_token_create(user=bob)
    refused = client.delete(f"/tokens/{bobs.pk}", **bearer(alice_raw))
    assert refused.status_code == 404 and refused.json()["code"] == "token_not_found"
    assert client.get("/bots", **bearer(bob_raw)).status_code == 200
    assert client.delete("/tokens/999999", **bearer(alice_raw)).status_code == 404
    User.objects.filter(pk=alice.pk).update(is_staff=True)
    revoked = client.delete(f"/tokens/{bobs.pk}", **bearer(alice_raw))
    assert revoked.status_code == 200 and revoked.json()["user"] == "bob"
    assert client.get("/bots", **bearer(bob_raw)).status_code == 401
    assert client.get("/tokens", **bearer(alice_raw)).json()["count"] == 1  # staff still lists only their own


def test_revoke_api_token_by_prefix_or_whole_token(alice):
    token, raw = api_token_create(user=alice, name="ci")
    out = io.StringIO()
    call_command("revoke_api_token", raw[:12], stdout=out)
    assert "revoked" in out.getvalue() and "alice" in out.getvalue() and api_token_verify(raw) is None
    call_command("revoke_api_token", raw, stdout=(again := io.StringIO()))  # the whole token works too
    assert "already revoked" in again.getvalue()
    token.refresh_from_db()
    assert token.revoked_at is not None


def test_revoke_api_token_for_every_token_of_a_user(alice, bob):
    raws = [api_token_create(user=alice, name=f"t{i}")[1] for i in range(3)]
    _, bobs = api_token_create(user=bob)
    out = io.StringIO()
    call_command("revoke_api_token", "--user", "alice", "--all", stdout=out)
    assert "revoked 3 API token(s) of alice" in out.getvalue()
    assert all(api_token_verify(raw) is None for raw in raws) and api_token_verify(bobs) == bob


@pytest.mark.parametrize("args,fragment", [
    (["pt_nosuchtok"], "no API token with prefix"),
    (["pt_"], "too short"),
    (["--user", "nobody", "--all"], "no user 'nobody'"),
    (["--user", "alice"], "--user USER --all"),
    (["pt_abcdefghi", "--user", "alice", "--all"], "either PREFIX"),
    ([], "name the token"),
])
def test_revoke_api_token_exits_2_and_revokes_nothing_on_unknown_input(alice, args, fragment):
    _, raw = api_token_create(user=alice)
    with pytest.raises(CommandError) as exc:
        call_command("revoke_api_token", *args, stdout=io.StringIO())
    assert exc.value.returncode == 2 and fragment in str(exc.value)
    assert api_token_verify(raw) == alice


def test_revoke_api_token_refuses_an_ambiguous_prefix(alice, bob):
    a, raw_a = api_token_create(user=alice)
    b, raw_b = api_token_create(user=bob)
    ApiToken.objects.filter(pk=a.pk).update(prefix="pt_samesame1")
    ApiToken.objects.filter(pk=b.pk).update(prefix="pt_samesame2")
    with pytest.raises(CommandError) as exc:
        call_command("revoke_api_token", "pt_samesame", stdout=io.StringIO())
    assert exc.value.returncode == 2 and "names 2 tokens" in str(exc.value)
    assert api_token_verify(raw_a) == alice and api_token_verify(raw_b) == bob


def test_the_admin_lists_tokens_read_only_without_the_hash_and_revokes_the_selected(client, alice, bob):
    root = User.objects.create_superuser("root", "root@example.com", "pw-123456")
    client.force_login(root)
    token, raw = api_token_create(user=alice, name="alice-ci")
    _, bob_raw = api_token_create(user=bob)
    listing = client.get("/admin/paper/apitoken/").content.decode()
    assert token.prefix in listing and token.token_hash not in listing
    page = client.get(f"/admin/paper/apitoken/{token.pk}/change/").content.decode()
    assert token.token_hash not in page and 'name="name"' not in page  # read-only fields
    assert client.get("/admin/paper/apitoken/add/").status_code == 403
    response = client.post("/admin/paper/apitoken/", {"action": "revoke_selected", "_selected_action": [token.pk]},
                           follow=True)
    assert response.status_code == 200 and "Revoked 1 token(s)" in response.content.decode()
    assert api_token_verify(raw) is None and api_token_verify(bob_raw) == bob
