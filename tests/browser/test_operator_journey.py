"""The operator's day in a real browser, in embedded and services mode: log in, author a bot,
backtest it, start a session, watch fills arrive and the chart grow, hit the kill switch,
see it on Health and Alerts, re-arm. Screenshots of every step go to test-artifacts/browser/."""
from __future__ import annotations

import time

import pytest

pytestmark = pytest.mark.e2e


def test_the_operator_journey(stack_server, browser, shots):
    base = stack_server.url
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("dialog", lambda d: d.accept())  # the kill switch's confirm dialog

    # 1. log in (every page requires an operator)
    page.goto(base + "/")
    assert "/ui/login/" in page.url
    page.fill("#id_username", "operator")
    page.fill("#id_password", "paper-demo")
    page.click("button[type=submit]")
    page.wait_for_url(base + "/")
    shots(page, "01-logged-in")

    # 2. author a bot through the form: a validation message first, then a valid bot
    page.goto(base + "/ui/bots/new/")
    page.select_option("select[name=strategy]", "sma_crossover")
    page.wait_for_selector("input[name='params.fast']")
    page.fill("input[name=name]", f"browser-{stack_server.mode}")
    page.fill("input[name=symbols]", "ETH-USD")
    page.fill("input[name='params.fast']", "30")
    page.fill("input[name='params.slow']", "10")
    page.click("main form button[type=submit]")
    page.wait_for_selector(".field-error")
    assert "fast must be smaller than slow" in " ".join(page.locator(".field-error").all_inner_texts())
    shots(page, "02a-bot-form-errors")
    page.fill("input[name='params.fast']", "3")
    page.fill("input[name='params.slow']", "8")
    page.click("main form button[type=submit]")
    page.wait_for_url("**/ui/bots/*/")
    shots(page, "02b-bot-created")

    # the gate refuses a session before any backtest, in plain words, inline
    page.fill("#paper-panel input[name=pace]", "60")
    page.click("#paper-panel button[type=submit]")
    page.wait_for_selector("#paper-panel .refusal")
    assert "backtest" in page.locator("#paper-panel .refusal").inner_text().lower()

    # 3. backtest it
    page.click("#backtest-panel button[type=submit]")
    page.wait_for_selector("#backtest-panel h3")
    assert "sharpe" in page.locator("#backtest-panel").inner_text().lower()
    shots(page, "03-backtested")

    # 4. start a session
    page.fill("#paper-panel input[name=pace]", "60")
    page.fill("#paper-panel input[name=duration_minutes]", "120")
    page.click("#paper-panel button[type=submit]")
    page.wait_for_url("**/ui/sessions/*/")
    run_id = page.url.rstrip("/").split("/")[-1]
    shots(page, "04-session-started")

    # 5. order.filled frames arrive and the chart grows
    page.wait_for_selector("#frame-log li.stage-orderfilled", timeout=60_000)
    chart = page.locator("#equity-chart")
    points_before = int(chart.get_attribute("data-points") or 0)
    page.wait_for_function(
        f"() => Number(document.getElementById('equity-chart').dataset.points || 0) >= {points_before + 2}",
        timeout=15_000)
    assert int(chart.get_attribute("data-markers") or 0) >= 1
    shots(page, "05-fills-and-chart")

    # 6. the kill switch: confirm, fan out, and the session is stopped within a second
    t0 = time.monotonic()
    page.click("button.btn-kill")
    page.wait_for_selector(".killswitch-report")
    page.wait_for_function("() => document.getElementById('live-status').textContent.includes('aborted')",
                           timeout=1000)
    elapsed = time.monotonic() - t0
    assert elapsed < 1.0, f"stopped after {elapsed:.3f} s"
    assert "stopped" in page.locator(".killswitch-report").inner_text().lower()
    page.wait_for_selector(".latched-banner")
    shots(page, "06-kill-switch")

    # 7. it shows on Health and Alerts
    page.goto(base + "/ui/health/")
    assert "aborted" in page.content()
    shots(page, "07a-health")
    page.goto(base + "/ui/alerts/")
    assert "PAPER_SESSION_ABORTED" in page.content() and run_id in page.content()
    shots(page, "07b-alerts")

    # 8. re-arm
    page.click("button.btn-rearm")
    page.wait_for_selector(".latched-banner", state="detached")
    shots(page, "08-rearmed")
    assert not errors, errors
    context.close()


def test_a_post_without_the_csrf_token_is_refused(stack_server, browser):
    context = browser.new_context()
    page = context.new_page()
    page.goto(stack_server.url + "/ui/login/")
    page.fill("#id_username", "operator")
    page.fill("#id_password", "paper-demo")
    page.click("button[type=submit]")
    page.wait_for_url(stack_server.url + "/")
    # the session cookie is there, the CSRF token is not sent: Django refuses
    response = context.request.post(stack_server.url + "/ui/kill-switch/", headers={"HX-Request": "true"})
    assert response.status == 403
    assert "latched-banner" not in context.new_page().goto(stack_server.url + "/").text()

    # a page whose token has gone stale: the kill switch is refused and the page says why
    page.on("dialog", lambda d: d.accept())
    page.goto(stack_server.url + "/")
    page.evaluate("""() => document.body.setAttribute("hx-headers", '{"X-CSRFToken": "stale-token"}')""")
    page.click("button.btn-kill")
    page.wait_for_selector("#flash:not([hidden])")
    assert page.locator("#flash").inner_text() == (
        "The server refused the request: the page's security token (CSRF) is missing or stale. "
        "Reload the page and try again. (403)")
    assert page.locator(".latched-banner").count() == 0
    context.close()
