"""Artifact roots are read safely (issue 13, finding 6): only regular files are read, no link is
followed out of a session folder, no open or read waits; a hostile entry is its session's issue.

Also: written artifacts and the index are readable as the umask says, and CSV cells are
formula-safe. Real files throughout (FIFOs, symlinks, a device node where the sandbox allows).

Every call that would hang on a regression runs under a timeout (a thread joined with one, or a
subprocess with one), so a regression fails instead of hanging the suite.
"""
from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from django.contrib.auth.models import User

from paper import artifact_contract as c
from paper import artifact_files as af
from paper import runbook as rb
from tests import runbook_fixtures as fx

REPO = Path(__file__).resolve().parent.parent
LIMIT = 20  # seconds: far beyond what a scan of these roots takes; a hang fails at it
KMSG = Path("/proc/kmsg")


def bounded(fn, *args, timeout: float = LIMIT, **kwargs):
    """fn(*args, **kwargs) in a daemon thread; fails (rather than hangs) if it does not return."""
    outcome = {}

    def run():
        from django.db import connections

        try:
            outcome["value"] = fn(*args, **kwargs)
        except BaseException as exc:  # noqa: BLE001 - re-raised below, in the test's thread
            outcome["error"] = exc
        finally:
            # The test client keeps a request's connection open (the test's transaction); in this
            # thread nobody else would close it, and on PostgreSQL each would keep a pooled one.
            connections.close_all()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"{getattr(fn, '__name__', fn)} still running after {timeout} s: it hangs"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


# -- hostile entries --------------------------------------------------------------------------------
# Each replaces one file (or the folder) of a complete, successful session; `issue` is a fragment
# of the problem the runbook must report for it; `unreadable` says whether the whole session is.

def _outside(folder: Path) -> Path:
    out = folder.parent.parent / "outside"
    out.mkdir(exist_ok=True)
    return out


def _fifo(folder: Path, name: str) -> None:
    (folder / name).unlink()
    os.mkfifo(folder / name)  # no writer, ever: an open without O_NONBLOCK blocks forever


def _link_to_fifo(folder: Path, name: str) -> None:
    target = _outside(folder) / f"{folder.name}.{name.replace('/', '_')}.fifo"
    os.mkfifo(target)
    (folder / name).unlink()
    (folder / name).symlink_to(target)


def _link_to_kmsg(folder: Path, name: str) -> None:
    (folder / name).unlink()
    (folder / name).symlink_to(KMSG)  # a regular file by stat, whose read blocks once drained


def _link_outside(folder: Path, name: str) -> None:
    # A symlink to a well-formed file outside the root: it must not be read either.
    target = _outside(folder) / f"{folder.name}.{name.replace('/', '_')}"
    target.write_bytes((folder / name).read_bytes().replace(b'"sharpe": 1.4', b'"sharpe": 99.0'))
    (folder / name).unlink()
    (folder / name).symlink_to(target)


def _link_inside(folder: Path, name: str) -> None:
    # Even a symlink to a file in the same folder is not followed: links are not files.
    (folder / f"{name}.real").write_bytes((folder / name).read_bytes())
    (folder / name).unlink()
    (folder / name).symlink_to(f"{Path(name).name}.real")


def _oversized(folder: Path, name: str) -> None:
    (folder / name).unlink()
    with open(folder / name, "wb") as fh:  # sparse: 100 MB on paper, nothing on disk
        fh.truncate(100 * 1024 * 1024)


def _device(folder: Path, name: str) -> None:
    (folder / name).unlink()
    try:
        os.mknod(folder / name, 0o600 | stat.S_IFCHR, os.makedev(1, 5))  # /dev/zero: a read never ends
    except PermissionError:
        pytest.skip("this sandbox may not make device nodes")


def _folder_link(folder: Path, name: str) -> None:
    # The session folder itself a symlink to a complete session folder outside the root.
    moved = _outside(folder) / folder.name
    folder.rename(moved)
    folder.symlink_to(moved)


HOSTILE = [
    # (id, damage, file, issue fragment, whole session unreadable)
    ("status a FIFO", _fifo, c.STATUS, "a FIFO", True),
    ("metrics a FIFO", _fifo, c.METRICS, "a FIFO", False),
    ("status a symlink to a FIFO", _link_to_fifo, c.STATUS, "a symlink", True),
    ("metrics a symlink to a FIFO", _link_to_fifo, c.METRICS, "a symlink", False),
    ("trades a FIFO", _fifo, c.TRADES, "a FIFO", False),
    ("chart a symlink to a FIFO", _link_to_fifo, c.EQUITY_PNG, "a symlink", False),
    ("metrics a symlink out of the root", _link_outside, c.METRICS, "a symlink", False),
    ("report a symlink inside the folder", _link_inside, c.REPORT, "a symlink", False),
    ("metadata 100 MB", _oversized, c.METADATA, "too large", False),
    ("metrics a character device", _device, c.METRICS, "a character device", False),
    ("session folder a symlink out of the root", _folder_link, None, "a symlink", True),
]
if KMSG.exists():
    HOSTILE += [
        ("status a symlink to /proc/kmsg", _link_to_kmsg, c.STATUS, "a symlink", True),
        ("metrics a symlink to /proc/kmsg", _link_to_kmsg, c.METRICS, "a symlink", False),
    ]
IDS = [h[0] for h in HOSTILE]


def hostile_root(base: Path, cases=HOSTILE) -> tuple[Path, dict[str, tuple]]:
    """A root with the good session and one broken session per case: {session id: case}."""
    root = base / "paper_sessions"
    fx.session_write(root, fx.SPECS[0])
    sessions = {}
    for i, case in enumerate(cases):
        sid = f"ps_20261121_{i:04d}_hostile"
        folder = fx.session_write(root, fx.SessionSpec(sid, c.SUCCESS, fx.NOW, "completed", finished_at=fx.NOW))
        case[1](folder, case[2])
        sessions[sid] = case
    return root, sessions


def check_record(record: rb.SessionRecord, case) -> None:
    label, _, name, fragment, unreadable = case
    assert record.issue, (label, record)
    assert fragment in record.issue, (label, record.issue)
    if name:
        assert record.issue.startswith(f"{name}: "), (label, record.issue)
    assert record.unreadable is unreadable, (label, record.status, record.issue)
    assert record.metrics.get("sharpe") != 99.0, label  # the file outside the root was not read
    if name in c.CANONICAL_FILES and fragment != "too large":  # an oversized file is still a file
        assert name not in record.artifacts and name in record.missing, label


@pytest.mark.parametrize("case", HOSTILE, ids=IDS)
def test_a_hostile_entry_is_its_sessions_issue_never_a_hang(tmp_path, case):
    root, sessions = hostile_root(tmp_path, [case])
    (sid,) = sessions
    records = {r.session_id: r for r in bounded(rb.sessions_scan, root)}
    assert set(records) == {fx.GOOD, sid}
    assert records[fx.GOOD].issue is None
    check_record(records[sid], case)
    check_record(bounded(rb.session_show, root, sid), case)
    # With the refresh's cache, twice (the second from the cache, the same record).
    cache: dict = {}
    for _ in range(2):
        again = {r.session_id: r for r in bounded(rb.sessions_scan, root, cache)}
        check_record(again[sid], case)


def test_a_symlinked_session_folder_becomes_its_issue_when_the_real_folder_moves_back(tmp_path):
    """The scan cache tells a symlink in a session's place from the real folder moved there."""
    root, sessions = hostile_root(tmp_path, [HOSTILE[IDS.index("session folder a symlink out of the root")]])
    (sid,) = sessions
    cache: dict = {}
    first = {r.session_id: r for r in rb.sessions_scan(root, cache)}
    assert first[sid].unreadable and "a symlink" in first[sid].issue
    target = (root / sid).readlink()
    (root / sid).unlink()
    target.rename(root / sid)
    second = {r.session_id: r for r in rb.sessions_scan(root, cache)}
    assert second[sid].status == c.SUCCESS and second[sid].issue is None


def runbook_cli(*argv: str) -> subprocess.CompletedProcess:
    """`python -m paper.runbook ...` as an operator runs it, killed (and failed) if it hangs."""
    return subprocess.run([sys.executable, "-m", "paper.runbook", *argv], cwd=REPO, capture_output=True,
                          text=True, timeout=LIMIT, env={**os.environ, "PYTHONIOENCODING": "utf-8"})


def test_all_six_runbook_commands_answer_over_a_hostile_root(tmp_path):
    root, sessions = hostile_root(tmp_path)
    listed = runbook_cli("list", str(root), "--json")
    assert listed.returncode == 0 and "Traceback" not in listed.stderr, listed.stderr
    records = {r["session_id"]: r for r in json.loads(listed.stdout)}
    assert set(records) == {fx.GOOD, *sessions}
    for sid, case in sessions.items():
        assert case[3] in records[sid]["issue"], (case[0], records[sid]["issue"])
        assert (records[sid]["status"] == rb.UNKNOWN) is case[4], case[0]

    text = runbook_cli("list", str(root))
    assert text.returncode == 0 and all(sid in text.stdout for sid in sessions)

    health = runbook_cli("health", str(root), "--json")
    assert health.returncode == 0, health.stderr
    doc = json.loads(health.stdout)
    assert doc["total"] == len(sessions) + 1
    assert doc["counts"][rb.UNKNOWN] == sum(case[4] for case in sessions.values())

    alerts = runbook_cli("alerts", str(root))
    assert alerts.returncode == 0, alerts.stderr
    unreadable = {a["session_id"] for a in json.loads(alerts.stdout)["alerts"] if a["code"] == c.ALERT_UNREADABLE}
    assert unreadable == {sid for sid, case in sessions.items() if case[4]}

    index = runbook_cli("index", str(root), "--json")
    assert index.returncode == 0, index.stderr
    rows = {r["session_id"]: r for r in json.loads((root / c.INDEX_JSON).read_text())["sessions"]}
    assert all(case[3] in rows[sid]["issue"] for sid, case in sessions.items())

    promotion = runbook_cli("promotion", str(root), "--json")
    assert promotion.returncode == 0, promotion.stderr
    doc = json.loads(promotion.stdout)
    assert [s["session_id"] for s in doc["ready"]] == [fx.GOOD]
    assert {s["session_id"] for s in doc["blocked"]} == set(sessions)

    for sid, case in sessions.items():
        for how in ((str(root), sid), (str(root / sid),)):
            shown = runbook_cli("show", *how, "--json")
            assert "Traceback" not in shown.stderr, (case[0], shown.stderr)
            if shown.returncode == 0:
                assert case[3] in json.loads(shown.stdout)["issue"], case[0]
            else:  # a session folder named directly that is not one (the symlinked folder)
                assert shown.returncode == 2 and case[3] in shown.stderr, (case[0], shown.stderr)


@pytest.mark.django_db
def test_the_manage_py_runbook_commands_answer_over_a_hostile_root(tmp_path):
    from django.core.management import call_command

    root, sessions = hostile_root(tmp_path)
    for flag in ("--paper-sessions-list", "--paper-sessions-health", "--paper-sessions-alerts",
                 "--paper-sessions-index", "--paper-sessions-promotion"):
        out = io.StringIO()
        bounded(call_command, "run", flag, str(root), "--json", stdout=out)
        assert out.getvalue().strip(), flag
    out = io.StringIO()
    sid = next(iter(sessions))
    bounded(call_command, "run", "--paper-sessions-show", str(root / sid), stdout=out)
    assert sessions[sid][3] in out.getvalue()


# -- the rest of the readers ------------------------------------------------------------------------

def test_load_status_does_not_wait_on_or_follow_a_hostile_status_file(tmp_path):
    from paper.artifacts import RunArtifacts

    for i, damage in enumerate((_fifo, _link_to_fifo, _link_outside, *([_link_to_kmsg] if KMSG.exists() else []))):
        folder = RunArtifacts(tmp_path / "paper_sessions", f"ps_{i}")
        folder.start(metadata={}, config={}, bars_total=10)
        damage(folder.dir, c.STATUS)
        later = RunArtifacts(tmp_path / "paper_sessions", f"ps_{i}")
        bounded(later.load_status)
        assert later._status == {}, damage.__name__


def test_the_helper_refuses_what_is_not_a_regular_file_and_reads_what_is(tmp_path):
    folder = tmp_path / "s"
    (folder / "artifacts").mkdir(parents=True)
    (folder / "a.json").write_bytes(b"{}")
    (folder / "artifacts" / "b.png").write_bytes(b"png")
    assert af.read_file(folder, "a.json") == b"{}"
    assert af.read_file(folder, "artifacts/b.png") == b"png"
    os.mkfifo(folder / "f.json")
    (folder / "l.json").symlink_to(folder / "a.json")
    (folder / "big.json").write_bytes(b" " * 101)
    for name, error, words in (("f.json", af.Refused, "a FIFO"), ("l.json", af.Refused, "a symlink"),
                               ("big.json", af.Refused, "too large"), ("nope.json", FileNotFoundError, ""),
                               ("artifacts", IsADirectoryError, "folder"), ("../s/a.json", af.Refused, "plain")):
        with pytest.raises(error) as caught:
            bounded(af.read_file, folder, name, limit=100)
        assert words in (caught.value.strerror or ""), (name, caught.value)
    (tmp_path / "link").symlink_to(folder)
    with pytest.raises(af.Refused, match="a symlink"):
        af.read_file(tmp_path / "link", "a.json")
    dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert af.file_state(dir_fd, "f.json") == "a FIFO, not a regular file"
        assert af.file_state(dir_fd, "l.json").startswith("a symlink to ")
        assert af.file_state(dir_fd, "nope.json") == "missing" and af.file_state(dir_fd, "a.json") is None
    finally:
        os.close(dir_fd)


# -- the API: health and alerts ---------------------------------------------------------------------

def asgi_request(path: str, token: str):
    """One GET through config/asgi.py's handler as daphne sends it: (status, body, seconds)."""
    from config import asgi

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
             "headers": [(b"host", b"testserver"), (b"authorization", f"Bearer {token}".encode())],
             "client": ("127.0.0.1", 5000), "server": ("testserver", 80)}

    async def call(app, started: float):
        sent, received = [], []

        async def receive():
            if not received:
                received.append(1)
                return {"type": "http.request", "body": b"", "more_body": False}
            await asyncio.Event().wait()

        async def send(message):
            sent.append(message)

        await app(scope, receive, send)
        body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
        return sent[0]["status"], json.loads(body), time.monotonic() - started

    return asgi.django_asgi, call


@pytest.fixture
def token(db):
    from paper.tokens import api_token_create

    _, raw = api_token_create(user=User.objects.create_user("ops", is_superuser=True, is_staff=True))
    return raw


@pytest.mark.django_db(transaction=True)
def test_api_health_and_alerts_answer_over_a_hostile_root(settings, token):
    root, sessions = hostile_root(settings.OUTPUTS_DIR)
    app, call = asgi_request("/paper/health", token)
    status, health, _ = bounded(asyncio.run, call(app, time.monotonic()))
    assert status == 200 and health["total"] == len(sessions) + 1
    assert health["counts"][rb.UNKNOWN] == sum(case[4] for case in sessions.values())
    app, call = asgi_request("/paper/alerts", token)
    status, alerts, _ = bounded(asyncio.run, call(app, time.monotonic()))
    assert status == 200
    flagged = {a["session_id"] for a in alerts["alerts"] if a["code"] == c.ALERT_UNREADABLE}
    assert flagged == {sid for sid, case in sessions.items() if case[4]}


@pytest.mark.django_db(transaction=True)
def test_a_scan_that_takes_too_long_is_a_503_with_the_reason(settings, token):
    from paper import artifact_scan

    root = settings.OUTPUTS_DIR / "paper_sessions"
    for i in range(60):  # a few dozen milliseconds of reading, well past the timeout below
        fx.session_write(root, fx.SessionSpec(f"ps_{i:04d}", c.SUCCESS, fx.NOW, "completed", finished_at=fx.NOW))
    settings.PAPER_SCAN_TIMEOUT_SECONDS = 0.001
    for path in ("/paper/health", "/paper/alerts"):
        app, call = asgi_request(path, token)
        status, body, _ = bounded(asyncio.run, call(app, time.monotonic()))
        assert status == 503 and body["code"] == "scan_timeout", body
        assert "did not finish within 0.001 s" in body["detail"], body
    # The abandoned scans finish by themselves and give their slots back.
    deadline = time.monotonic() + LIMIT
    while artifact_scan._slots._value < artifact_scan.SCAN_THREADS and time.monotonic() < deadline:
        time.sleep(0.01)
    assert artifact_scan._slots._value == artifact_scan.SCAN_THREADS
    settings.PAPER_SCAN_TIMEOUT_SECONDS = LIMIT
    app, call = asgi_request("/paper/health", token)
    assert bounded(asyncio.run, call(app, time.monotonic()))[0] == 200


@pytest.mark.django_db(transaction=True)
def test_other_requests_are_served_while_health_waits_for_a_scan(settings, token):
    """Both scan threads held (as by two scans that never end): /paper/health waits its timeout and
    answers 503, and meanwhile the same ASGI app serves another request at once."""
    from paper import artifact_scan

    fx.session_write(settings.OUTPUTS_DIR / "paper_sessions", fx.SPECS[0])
    settings.PAPER_SCAN_TIMEOUT_SECONDS = 2.0
    app, health = asgi_request("/paper/health", token)
    _, other = asgi_request("/paper", token)

    async def both():
        started = time.monotonic()
        waiting = asyncio.ensure_future(health(app, started))
        await asyncio.sleep(0.2)  # health is waiting for a scan thread by now
        served = await other(app, started)
        assert not waiting.done(), "health did not wait for the scan"
        return served, await waiting

    for _ in range(artifact_scan.SCAN_THREADS):
        assert artifact_scan._slots.acquire(timeout=1)
    try:
        (status, page, at), (health_status, body, health_at) = bounded(asyncio.run, both())
    finally:
        for _ in range(artifact_scan.SCAN_THREADS):
            artifact_scan._slots.release()
    assert status == 200 and "items" in page and at < 2.0, (status, at)
    assert health_status == 503 and body["code"] == "scan_timeout" and health_at >= 2.0, (health_status, health_at)
    assert bounded(asyncio.run, health(app, time.monotonic()))[0] == 200  # slots back: scans run again


# -- the artifact download --------------------------------------------------------------------------
# Committed rows: a download under `bounded` runs in a thread of its own, with its own connection.
DOWNLOAD_DB = pytest.mark.django_db(transaction=True)


@pytest.fixture
def browser_run(client, demo_bot, settings):
    from ledger.models import PaperTradingRun
    from ledger.services import run_create

    config = demo_bot.trading_config()
    run = run_create(bot=demo_bot, starting_cash=100_000, symbol="ETH-USD", timeframe=demo_bot.timeframe,
                     data_source="synthetic", seed=1, config_snapshot=config.canonical(),
                     config_hash=config.config_hash, duration_minutes=60)
    PaperTradingRun.objects.filter(pk=run.pk).update(status="success", status_reason="completed")
    client.force_login(User.objects.create_user("operator", is_superuser=True, is_staff=True))
    folder = fx.session_write(settings.OUTPUTS_DIR / "paper_sessions",
                              fx.SessionSpec(run.id, c.SUCCESS, fx.NOW, "completed", finished_at=fx.NOW))
    return client, run, folder


def _download(client, run, name):
    response = client.get(f"/ui/sessions/{run.id}/artifacts/{name}")
    body = b"".join(response.streaming_content) if response.streaming else response.content
    return response.status_code, body, response


@DOWNLOAD_DB
def test_the_download_serves_regular_files_as_before(browser_run):
    client, run, folder = browser_run
    for name in c.CANONICAL_FILES:
        status, body, response = _download(client, run, name)
        assert status == 200 and body == (folder / name).read_bytes(), name
        assert int(response["Content-Length"]) == len(body), name
        assert response["Content-Disposition"] == f'inline; filename="{Path(name).name}"', name


@DOWNLOAD_DB
def test_the_download_refuses_a_symlinked_session_folder(browser_run):
    client, run, folder = browser_run
    _folder_link(folder, None)
    assert (folder.parent / run.id).is_symlink()
    for name in (c.REPORT, c.METRICS, c.TRADES, c.EQUITY_PNG):
        status, body, _ = bounded(_download, client, run, name)
        assert status == 404 and b'"sharpe"' not in body, name
    page = client.get(f"/ui/sessions/{run.id}/").content.decode()
    assert f"{c.REPORT} (not written yet)" in page


@DOWNLOAD_DB
@pytest.mark.parametrize("case", [h for h in HOSTILE if h[2] is not None], ids=[h[0] for h in HOSTILE if h[2]])
def test_the_download_refuses_a_hostile_file_with_404_never_a_hang(browser_run, case):
    client, run, folder = browser_run
    _, damage, name, _, _ = case
    damage(folder, name)
    status, body, _ = bounded(_download, client, run, name)
    assert status == 404 and b"99.0" not in body, case[0]
    assert _download(client, run, c.CONFIG)[0] == 200  # the session's other files are still served


@DOWNLOAD_DB
def test_a_file_over_its_download_limit_is_refused(browser_run):
    client, run, folder = browser_run
    (folder / c.TRADES).unlink()
    with open(folder / c.TRADES, "wb") as fh:
        fh.truncate(af.MAX_CSV_BYTES + 1)
    assert bounded(_download, client, run, c.TRADES)[0] == 404


# -- written files: readable as the umask says -----------------------------------------------------

WRITE_ALL = """
import sys
from pathlib import Path
from paper.artifacts import RunArtifacts, write_json
from paper import runbook
root = Path(sys.argv[1])
folder = RunArtifacts(root, "ps_1")
folder.start(metadata={}, config={}, bars_total=1)
folder.mark_terminal(status="aborted", status_reason="x", bars_processed=0)
folder.finish(status="aborted", status_reason="x", result=None, request_id="", data={},
              contract_type="quantlab.paper.result", extra_metrics={"starting_cash": 1.0})
runbook.index_write(root)
"""


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_written_artifacts_and_the_index_follow_the_umask(tmp_path, umask, mode):
    root = tmp_path / "paper_sessions"
    subprocess.run([sys.executable, "-c", WRITE_ALL, str(root)], cwd=REPO, check=True, timeout=120,
                   preexec_fn=lambda: os.umask(umask))
    written = [p for p in root.rglob("*") if p.is_file()]
    assert {p.name for p in written} >= {Path(n).name for n in c.CANONICAL_FILES} | {c.INDEX_CSV, c.INDEX_JSON}
    assert {p.relative_to(root).as_posix(): oct(stat.S_IMODE(p.stat().st_mode)) for p in written} == {
        p.relative_to(root).as_posix(): oct(mode) for p in written}


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="no /proc here")
def test_the_umask_is_read_from_proc_without_setting_it():
    before = af._umask_from_proc()
    assert before is not None and af.process_umask() == before
    assert af._umask_from_proc() == before


# -- CSV cells a spreadsheet does not run -----------------------------------------------------------

FORMULA_BOT = '=HYPERLINK("http://x","y")'


def test_index_csv_cells_are_formula_safe_and_numbers_stay_numbers(tmp_path):
    root = tmp_path / "paper_sessions"
    folder = fx.session_write(root, fx.SessionSpec(fx.GOOD, c.FAILED, fx.NOW, "-1+1 exploded", finished_at=fx.NOW,
                                                   metrics={**fx.GOOD_METRICS, "total_pnl": -3.5,
                                                            "num_trades": -2},
                                                   error_type="@SUM(A1)", error_message="\tx"))
    meta = json.loads((folder / c.METADATA).read_text())
    # A CR inside a cell would end the record for a reader, and start a row of the cell's choosing.
    meta.update(bot_name=FORMULA_BOT, strategy="+cmd", ticker="\rETH", mode="replay\r=1+1")
    (folder / c.METADATA).write_text(json.dumps(meta))
    csv_path, json_path = rb.index_write(root)
    with open(csv_path, newline="", encoding="utf-8") as fh:
        (row,) = list(csv.DictReader(fh))
    assert row["bot_name"] == "'" + FORMULA_BOT
    assert row["strategy"] == "'+cmd" and row["ticker"] == "'\rETH" and row["mode"] == "replay\r=1+1"
    assert row["status_reason"] == "'-1+1 exploded"
    assert row["issue"].startswith("failed: ")  # text that starts safely is unchanged
    assert row["total_pnl"] == "-3.5" and row["num_trades"] == "-2" and row["sharpe"] == "1.4"
    # The JSON index keeps the values as they are: it is not read by spreadsheets.
    doc = json.loads(json_path.read_text())
    assert doc["sessions"][0]["bot_name"] == FORMULA_BOT and doc["sessions"][0]["total_pnl"] == -3.5
    assert rb.csv_cell(-3.5) == "-3.5" and rb.csv_cell(-7) == "-7" and rb.csv_cell("-7") == "'-7"
    assert rb.csv_cell(False) == "false" and rb.csv_cell(None) == ""


def test_trades_csv_text_cells_are_formula_safe():
    from paper.artifacts import trades_csv_bytes
    from paper.engine.orders import Fill, Liquidity, Side

    fills = [Fill(fill_id="f000002", client_order_id="o1\r=1+1", symbol="ETH-USD", side=Side.BUY,
                  qty=1.0, price=1.0, fee=0.0, ts=1_700_000_000, bar_index=2),
             Fill(fill_id="f000001", client_order_id="@SUM(1+1)", symbol='=cmd|"/C calc"!A0', side=Side.SELL,
                  qty=1.5, price=-0.25, fee=0.0, ts=1_700_000_000, bar_index=3, liquidity=Liquidity.TAKER)]
    # A CR inside a cell is quoted: it does not end the record and start a row of its own.
    (header, first, row) = list(csv.reader(io.StringIO(trades_csv_bytes(fills).decode(), newline="")))
    assert dict(zip(header, first, strict=True))["order_id"] == "o1\r=1+1"
    cells = dict(zip(header, row, strict=True))
    assert cells["order_id"] == "'@SUM(1+1)" and cells["symbol"] == """'=cmd|"/C calc"!A0"""
    assert cells["fill_id"] == "f000001" and cells["price"] == "-0.25" and cells["qty"] == "1.5"


@pytest.mark.django_db(transaction=True)
def test_dashboard_scans_are_bounded_too(settings, client, django_user_model):
    """The dashboard's health, alerts and promotion pages and the top bar (on every page) scan
    through the same bounded scan: with every scan thread busy, the pages answer 503 with the
    reason and the top bar shows "?" alerts, instead of holding the request."""
    from paper import artifact_scan

    user = django_user_model.objects.create_user("viewer", password="pw-123456")
    client.force_login(user)
    fx.session_write(settings.OUTPUTS_DIR / "paper_sessions", fx.SPECS[0])
    settings.PAPER_SCAN_TIMEOUT_SECONDS = 0.2
    for _ in range(artifact_scan.SCAN_THREADS):
        assert artifact_scan._slots.acquire(timeout=1)
    try:
        for url in ("/ui/health/", "/ui/alerts/", "/ui/promotion/"):
            response = client.get(url)
            assert response.status_code == 503, (url, response.status_code)
            assert b"did not finish within 0.2 s" in response.content
        sessions = client.get("/ui/sessions/")
        assert sessions.status_code == 200 and b'data-count="alerts">?<' in sessions.content
    finally:
        for _ in range(artifact_scan.SCAN_THREADS):
            artifact_scan._slots.release()
    assert client.get("/ui/health/").status_code == 200


@pytest.mark.django_db(transaction=True)
def test_writes_never_follow_a_symlinked_session_folder(settings, tmp_path):
    """A session folder replaced by a link to somewhere else (here mid-session): the session's
    later writes are refused, nothing lands outside the root, and the session still ends."""
    import shutil

    from paper.artifacts import RunArtifacts

    root = settings.OUTPUTS_DIR / "paper_sessions"
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    artifacts = RunArtifacts(root, "ps_link")
    artifacts.start(metadata={"mode": "live"}, config={}, bars_total=3)
    shutil.rmtree(root / "ps_link")
    (root / "ps_link").symlink_to(outside, target_is_directory=True)
    with pytest.raises(af.Refused):
        artifacts.heartbeat(bars_processed=1)
    with pytest.raises(af.Refused):
        artifacts.mark_terminal(status=c.SUCCESS, status_reason="completed", bars_processed=3)
    assert list(outside.iterdir()) == []
    linked = RunArtifacts(root, "ps_inner")
    linked.start(metadata={"mode": "live"}, config={}, bars_total=3)
    shutil.rmtree(root / "ps_inner" / c.ARTIFACTS_DIR)
    (root / "ps_inner" / c.ARTIFACTS_DIR).symlink_to(outside, target_is_directory=True)
    linked.finish(status=c.SUCCESS, status_reason="completed", result=None, request_id="", contract_type="x",
                  data={}, extra_metrics={})  # the charts are refused; the rest is written in the real folder
    assert list(outside.iterdir()) == []
    report = json.loads((root / "ps_inner" / c.REPORT).read_text())
    assert set(report["chart_errors"]) == {c.EQUITY_PNG, c.DRAWDOWN_PNG}
    assert "symlink" in report["chart_errors"][c.EQUITY_PNG]


def test_the_research_runs_index_reads_safely_and_writes_formula_safe_cells(tmp_path):
    import csv

    from paper.replay import runs_index_write

    root = tmp_path / "runs"
    good = root / "run_good"
    good.mkdir(parents=True)
    (good / c.REPORT).write_text(json.dumps({"status": "success", "metrics": {"total_return": -0.5}}))
    (good / c.METADATA).write_text(json.dumps({"bot_name": '=HYPERLINK("http://x","y")', "ticker": "ETH-USD"}))
    fifo = root / "run_fifo"
    fifo.mkdir()
    os.mkfifo(fifo / c.REPORT)
    (fifo / c.METADATA).write_text("{}")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / c.REPORT).write_text(json.dumps({"status": "success"}))
    (outside / c.METADATA).write_text("{}")
    (root / "run_link").symlink_to(outside, target_is_directory=True)
    bounded(runs_index_write, root)
    with open(root / c.RUNS_INDEX_CSV, newline="", encoding="utf-8") as fh:
        rows = {row["run_id"]: row for row in csv.DictReader(fh)}
    assert set(rows) == {"run_good", "run_fifo"}  # the link is not followed
    assert rows["run_good"]["bot_name"] == '\'=HYPERLINK("http://x","y")' and rows["run_good"]["total_return"] == "-0.5"
    assert rows["run_fifo"]["issue"] == "unreadable report"
