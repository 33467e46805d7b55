"""`manage.py serve` (issue 13): oversized request heads answered 431/414 by the real server, the
development SECRET_KEY warning, one reused demo token across starts, and /docs without a CDN."""
from __future__ import annotations

import io
import json
import logging
import re
import socket
import stat
import time
import urllib.request

import pytest
from django.contrib.auth.models import User

from bench.stack import Stack
from paper.management.commands.serve import Command, demo_token_path
from paper.models import ApiToken
from paper.tokens import api_token_create, api_token_revoke, api_token_verify

DEV_KEY = "dev-only-insecure-key-change-me"


# --- a real `manage.py serve` (embedded) ------------------------------------------------------

@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    stack = Stack(mode="embedded", workdir=tmp_path_factory.mktemp("serve"), embedded_threads=2)
    stack.env.pop("SECRET_KEY", None)  # the development default: serve must warn
    stack.start()
    yield stack
    stack.stop()


def raw_request(port: int, head: bytes, *, timeout: float = 10.0) -> bytes:
    """Send a request head on a fresh socket and read everything until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(head)
        chunks, deadline = [], time.monotonic() + timeout
        while time.monotonic() < deadline:
            data = sock.recv(65536)
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks)


def get_head(extra: bytes = b"", path: bytes = b"/openapi.json") -> bytes:
    return b"GET " + path + b" HTTP/1.1\r\nHost: 127.0.0.1\r\n" + extra + b"\r\n"


def test_a_100_kb_header_is_answered_431_and_the_connection_closed(stack):
    answer = raw_request(stack.port, get_head(b"X-Request-ID: " + b"a" * 100_000 + b"\r\n"))
    assert answer.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"), answer[:200]
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"Connection: close" in head and b"text/plain" in head
    assert int(re.search(rb"Content-Length: (\d+)", head).group(1)) == len(body)
    assert b"16384 bytes" in body and len(body) < 300
    # The server still serves everyone else.
    assert urllib.request.urlopen(stack.url + "/openapi.json", timeout=10).status == 200


@pytest.mark.parametrize(("label", "extra", "path", "status"), [
    ("headers over 16 kB in all", b"".join(b"X-Pad-%d: %s\r\n" % (i, b"b" * 100) for i in range(200)),
     b"/openapi.json", b"431"),
    ("more than 500 headers", b"".join(b"X-H%d: 1\r\n" % i for i in range(600)), b"/openapi.json", b"431"),
    ("a 20 kB request line", b"", b"/openapi.json?q=" + b"x" * 20_000, b"414"),
])
def test_other_oversized_heads_are_answered_too(stack, label, extra, path, status):
    answer = raw_request(stack.port, get_head(extra, path))
    assert answer.startswith(b"HTTP/1.1 " + status + b" "), (label, answer[:200])


def test_a_normal_head_is_served_and_the_connection_kept_alive(stack):
    with socket.create_connection(("127.0.0.1", stack.port), timeout=10) as sock:
        for _ in range(2):
            sock.sendall(get_head(b"X-Request-ID: " + b"r" * 8000 + b"\r\n", b"/paper?limit=1"))
            data = b""
            while b"\r\n\r\n" not in data:
                data += sock.recv(65536)
            assert data.startswith(b"HTTP/1.1 401 "), data[:200]  # no token: the API's answer
            length = int(re.search(rb"(?i)content-length: (\d+)", data).group(1))
            body = data.partition(b"\r\n\r\n")[2]
            while len(body) < length:
                body += sock.recv(65536)


def test_a_large_but_allowed_x_request_id_is_stored_bounded_not_a_500(stack):
    body = json.dumps({"starting_cash": 1000, "duration_minutes": 1}).encode()
    req = urllib.request.Request(f"{stack.url}/bots/{stack.demo_bot_id}/paper", data=body, method="POST", headers={
        "Authorization": f"Bearer {stack.token}", "Content-Type": "application/json", "X-Request-ID": "z" * 8000})
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert resp.status == 201
        run = json.loads(resp.read())
    req = urllib.request.Request(f"{stack.url}/paper/{run['paper_run_id']}",
                                 headers={"Authorization": f"Bearer {stack.token}"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        assert json.loads(resp.read())["request_id"] == "z" * 100


def test_serve_warns_about_the_dev_key_and_a_restart_shows_the_same_token(stack):
    log = (stack.workdir / "serve.log").read_text()
    assert "WARNING: SECRET_KEY is the development default" in log and "export SECRET_KEY=" in log
    first = stack.token
    stack.kill(stack.serve)
    stack.procs.remove(stack.serve)
    stack.env["SECRET_KEY"] = "a-real-secret-" + "k" * 40
    stack.start_serve(log_name="serve-restarted.log")
    assert stack.token == first
    restarted = (stack.workdir / "serve-restarted.log").read_text()
    assert "SECRET_KEY" not in restarted and "the same as at the last start" in restarted
    req = urllib.request.Request(f"{stack.url}/bots/{stack.demo_bot_id}", headers={"Authorization": f"Bearer {first}"})
    assert urllib.request.urlopen(req, timeout=10).status == 200


def test_docs_page_from_the_real_server_loads_nothing_from_a_cdn(stack):
    page = urllib.request.urlopen(stack.url + "/docs", timeout=10).read().decode()
    urls = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert urls and all(u.startswith("/static/vendor/swagger-ui/") for u in urls), urls
    for url in urls:
        with urllib.request.urlopen(stack.url + url, timeout=10) as resp:
            assert resp.status == 200 and len(resp.read()) > 500


# --- the SECRET_KEY warning -------------------------------------------------------------------

def test_the_dev_secret_key_warning_goes_to_stderr_and_the_log(settings, caplog):
    settings.SECRET_KEY = DEV_KEY
    err = io.StringIO()
    with caplog.at_level(logging.WARNING, logger="paper.management.commands.serve"):
        assert Command(stderr=err)._secret_key_check() is True
    assert "SECRET_KEY is the development default" in err.getvalue()
    assert "SECRET_KEY environment variable" in err.getvalue()
    assert any("SECRET_KEY" in r.getMessage() for r in caplog.records)


def test_no_warning_with_a_secret_key_of_ones_own(settings, caplog):
    settings.SECRET_KEY = "something-else-" + "x" * 40
    err = io.StringIO()
    with caplog.at_level(logging.WARNING, logger="paper.management.commands.serve"):
        assert Command(stderr=err)._secret_key_check() is False
    assert err.getvalue() == "" and not caplog.records


# --- the demo token across starts ---------------------------------------------------------------

def active_demo_tokens():
    return ApiToken.objects.filter(user__username="operator", name="demo", revoked_at__isnull=True)


def demo_setup(url="http://127.0.0.1:8000") -> str:
    """What `serve` does for the demo at each start; returns the TOKEN it printed."""
    out = io.StringIO()
    Command(stdout=out, stderr=io.StringIO())._demo(url)
    return re.search(r"TOKEN=(\S+)", out.getvalue()).group(1)


@pytest.mark.django_db
def test_each_start_shows_the_same_single_valid_demo_token():
    first = demo_setup()
    second = demo_setup()
    assert first == second
    assert active_demo_tokens().count() == 1
    assert api_token_verify(first).username == "operator"
    path = demo_token_path()
    assert path.read_text().strip() == first
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.django_db
def test_the_demo_tokens_earlier_starts_minted_are_revoked_and_a_revoked_one_is_replaced():
    operator = User.objects.create_user("operator", password="paper-demo", is_staff=True, is_superuser=True)
    piled = [api_token_create(user=operator, name="demo")[1] for _ in range(3)]  # the old serve, 3 starts
    mine = api_token_create(user=operator, name="my script")[1]
    token = demo_setup()
    assert token not in piled and active_demo_tokens().count() == 1
    assert all(api_token_verify(raw) is None for raw in piled)
    assert api_token_verify(mine) is not None, "the operator's other tokens are left alone"

    # Revoked by hand (e.g. `revoke_api_token`): the next start mints one and keeps that.
    api_token_revoke(token=active_demo_tokens().get())
    replaced = demo_setup()
    assert replaced != token and active_demo_tokens().count() == 1 and api_token_verify(replaced)
    assert demo_setup() == replaced

    # A file that holds something else (another database's token, garbage): a new one.
    demo_token_path().write_text("pt_not-a-token-of-this-database\n")
    assert demo_setup() not in (replaced, "pt_not-a-token-of-this-database")
    assert active_demo_tokens().count() == 1
