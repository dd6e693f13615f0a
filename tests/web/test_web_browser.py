"""The guided web app in a real browser (Debian's chromium driven by Playwright).

A real ``mailtls serve`` subprocess; the browser walks the pages like a user while scripted mail
clients (stdlib imaplib/smtplib, the run's account) do what the page asks. Screenshots of the
landing page, a live step and the result page at desktop and phone sizes go to
``var/screenshots/`` (not committed).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from web_kit import (
    Tab,
    imap_session,
    launch_browser,
    new_tab,
    screenshot,
    smtp_session,
)

from conftest import ServeInstance, start_serve

pytestmark = pytest.mark.timeout(110)

XSS = '<script>alert("x")</script>\'quote"<img src=x onerror=alert(1)>'


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with launch_browser() as b:
        yield b


def account(tab: Tab, inst: ServeInstance) -> tuple[str, str]:
    """The account the run page shows; its server table names the run's own ports, which the
    scripted clients then use (``inst.port_for``)."""
    page = tab.page
    run_id = page.url.split("/run/", 1)[1].split("/", 1)[0].split("?", 1)[0]
    view = httpx.get(f"{inst.url}/api/runs/{run_id}", timeout=10).json()
    inst.remember(view)
    table = page.inner_text("table.servers")
    assert all(str(s["port"]) in table for s in view["account"]["servers"]["imap"]), table
    return page.inner_text("#acct-user").strip(), page.inner_text("#acct-pass").strip()


def wait_finish_button(tab: Tab, live: bool = False) -> None:
    """Wait for the finish button: pushed by the live view, or (``live=False``) after reloads."""
    page = tab.page
    for _ in range(1 if live else 20):
        try:
            page.wait_for_selector("#finish", timeout=8000 if live else 500)
            return
        except Exception:
            if live:
                raise
            page.reload()
    raise AssertionError(f"no finish button; page says: {page.inner_text('#finish-box')}")


def finish(tab: Tab, expected: str) -> None:
    wait_finish_button(tab)
    tab.page.click("#finish")
    tab.page.wait_for_selector("#verdict")
    badge = tab.page.locator("#verdict .verdict")
    assert badge.get_attribute("data-verdict") == expected, tab.page.inner_text("#verdict")


def start(tab: Tab, n: int) -> None:
    page = tab.page
    assert page.inner_text("h1").startswith(f"Step {n}:"), page.inner_text("h1")
    page.click("#start")
    page.wait_for_selector("#live")


def answer(tab: Tab, prompt: bool = False, cannot_connect: bool = False) -> None:
    page = tab.page
    page.check(f"input[name=prompt_shown][value={'yes' if prompt else 'no'}]")
    page.check(f"input[name=cannot_connect][value={'yes' if cannot_connect else 'no'}]")
    page.click("#save-answers")
    page.wait_for_selector("#answers-saved")


def skip(tab: Tab, n: int) -> None:
    page = tab.page
    assert page.inner_text("h1").startswith(f"Step {n}:")
    page.get_by_role("button", name="Skip this step").first.click()
    page.wait_for_load_state()


def no_horizontal_scroll(tab: Tab) -> None:
    width = tab.page.evaluate("document.documentElement.scrollWidth")
    # the size the page was given: a mobile browser widens its layout viewport (and
    # innerWidth) to fit content that is too wide, so innerWidth would hide the overflow
    viewport = tab.page.viewport_size["width"]
    assert width <= viewport, f"{tab.page.url} scrolls sideways: {width} > {viewport}"


def phone_shots(browser: Any, url: str, name: str) -> None:
    for size, label in ((390, "phone"), (360, "phone360")):
        tab = new_tab(browser, phone=True)
        tab.page.set_viewport_size({"width": size, "height": 800})
        tab.page.goto(url)
        no_horizontal_scroll(tab)
        if label == "phone":
            screenshot(tab.page, f"{name}-phone")
        tab.page.context.close()


def test_guided_imap_run_end_to_end(browser: Any, serve: ServeInstance) -> None:
    tab = new_tab(browser)
    page = tab.page
    page.goto(serve.url)
    screenshot(page, "landing-desktop")
    phone_shots(browser, serve.url, "landing")
    page.check("input[name=protocol][value=imap]")
    page.click("text=Start the guided test")
    page.wait_for_url(re.compile(r"/run/[A-Za-z0-9_-]{20,}$"))
    user, password = account(tab, serve)
    assert user.startswith("test-")
    page.click("text=Begin with step 1")

    # 1 baseline: a normal secure login; the live view shows it and offers "finish" by itself
    start(tab, 1)
    assert page.locator("#finish").count() == 0
    assert imap_session(serve, user, password) == "tls-login"
    assert smtp_session(serve, user, password) == "tls-login"
    page.locator("#live").get_by_text("Your app connected to IMAP").first.wait_for()
    page.locator("#live").get_by_text("logged in over an encrypted connection").first.wait_for()
    wait_finish_button(tab, live=True)
    screenshot(page, "step-live-desktop")
    phone_shots(browser, page.url, "step-live")
    finish(tab, "PASS")
    page.click("#next")

    # 2 immediate t1: the opportunistic client logs in without encryption
    start(tab, 2)
    assert imap_session(serve, user, password) == "plain-login"
    page.locator("#live").get_by_text("WITHOUT encryption").first.wait_for()
    finish(tab, "FAIL")
    page.click("#next")

    # 3 immediate t2: skipped
    skip(tab, 3)

    # 4 immediate t3: a strict client stops; the user reports a prompt
    start(tab, 4)
    assert imap_session(serve, user, password, strict=True).startswith("stopped")
    answer(tab, prompt=True)
    finish(tab, "WARN")
    page.click("#next")

    # 5 immediate t4: the app could not connect at all; that answer lets the user finish
    start(tab, 5)
    assert page.locator("#finish").count() == 0
    assert "second IMAP connection" in page.inner_text("#missing")
    answer(tab, cannot_connect=True)
    finish(tab, "NOT_APPLICABLE")
    page.click("#next")

    # 6 two_phase t1: a secure login arms the attack, the next login goes out in the clear
    start(tab, 6)
    assert imap_session(serve, user, password) == "tls-login"
    page.locator(".armed.on").wait_for(timeout=8000)
    assert imap_session(serve, user, password) == "plain-login"
    finish(tab, "FAIL")
    page.click("#next")

    # 7 two_phase t2: a strict client refuses to go on: the good INCONCLUSIVE
    start(tab, 7)
    # one try after the error is not enough: the step waits for the second
    assert imap_session(serve, user, password, strict=True) == "tls-login"
    assert imap_session(serve, user, password, strict=True).startswith("stopped")
    page.reload()
    assert page.locator("#finish").count() == 0
    assert "second IMAP connection" in page.inner_text("#missing")
    assert imap_session(serve, user, password, strict=True).startswith("stopped")
    finish(tab, "INCONCLUSIVE")
    assert "refused to continue without encryption" in page.inner_text("#verdict")
    page.click("#next")

    skip(tab, 8)
    skip(tab, 9)
    page.wait_for_url(re.compile(r"/run/[A-Za-z0-9_-]+$"))
    page.click("text=See your results")
    page.wait_for_selector("#results")
    verdicts = {
        int(row.get_attribute("id").split("-")[1]): row.locator(".verdict").get_attribute(
            "data-verdict"
        )
        for row in page.locator("#results tbody tr[id^=step-]").all()
    }
    assert verdicts == {
        1: "PASS",
        2: "FAIL",
        3: "SKIPPED",
        4: "WARN",
        5: "NOT_APPLICABLE",
        6: "FAIL",
        7: "INCONCLUSIVE",
        8: "SKIPPED",
        9: "SKIPPED",
    }
    assert "WITHOUT encryption" in page.inner_text("#step-2")
    assert page.inner_text("#step-7 .verdict") == "Safe: it stopped"
    assert "Unsafe" in page.inner_text("#summary")
    page.locator("#transcript-1 summary").click()
    assert "encrypted" in page.inner_text("#transcript-1 .transcript")
    screenshot(page, "result-desktop")
    phone_shots(browser, page.url, "result")
    assert tab.dialogs == []
    page.context.close()


def test_client_strings_are_shown_as_text(browser: Any, serve: ServeInstance) -> None:
    tab = new_tab(browser)
    page = tab.page
    page.goto(serve.url)
    page.select_option("#scenario", "immediate")
    page.select_option("#testcase", "baseline")
    page.click("text=Start a single test")
    user, password = account(tab, serve)
    page.click("text=Begin with step 1")
    start(tab, 1)
    assert imap_session(serve, user, password, client_id=XSS) == "tls-login"
    assert smtp_session(serve, user, password, ehlo=XSS.replace(" ", "")) == "tls-login"
    # a username that carries the run's code and markup: attributed to the run, shown as text
    assert smtp_session(serve, user.split("@")[0] + "@" + XSS, password) == "tls-login"
    finish(tab, "PASS")
    page.click("#next")
    page.wait_for_selector("#results")
    for details in page.locator("#results details").all():
        details.locator("summary").click()
    text = page.inner_text("#results")
    assert XSS in text  # the IMAP ID value, literally
    assert XSS.replace(" ", "") in text  # the EHLO name, literally
    assert page.evaluate("document.querySelectorAll('script').length") == 1
    assert page.evaluate("document.querySelectorAll('#results img').length") == 0
    page.goto(page.url.split("#")[0])  # once more, fresh
    assert tab.dialogs == []
    page.context.close()


def two_runs_from_one_address(browser: Any, inst: ServeInstance, exact: bool) -> None:
    tabs: list[Tab] = []
    accounts: list[tuple[str, str]] = []
    for _ in range(2):
        tab = new_tab(browser)  # own context: own cookies, like two people behind one NAT
        tab.page.goto(inst.url)
        tab.page.select_option("#testcase", "baseline")
        tab.page.click("text=Start a single test")
        accounts.append(account(tab, inst))
        tab.page.click("text=Begin with step 1")
        tabs.append(tab)
    a, b = tabs
    start(a, 1)
    start(b, 1)
    a.page.reload()
    if exact:  # each run has its own servers: nothing to take over
        for tab in tabs:
            assert tab.page.locator("#collision").count() == 0
            assert "this test's own servers" in tab.page.inner_text("#binding")
        assert imap_session(inst, *accounts[1]) == "tls-login"
        assert imap_session(inst, *accounts[0]) == "tls-login"
        finish(b, "PASS")
    else:  # newest binding wins: b took the address from a
        assert "took over your network address" in a.page.inner_text("#collision")
        assert "was running from your network address" in b.page.inner_text("#collision")
        assert "your network address" in a.page.inner_text("#binding")
        assert imap_session(inst, *accounts[1]) == "tls-login"
        finish(b, "PASS")
        a.page.click("text=Attach my address to this step again")
        assert imap_session(inst, *accounts[0]) == "tls-login"
    finish(a, "PASS")
    for me, other in ((0, 1), (1, 0)):
        page = tabs[me].page
        page.click("#next")
        page.wait_for_selector("#results")
        page.locator("#results .transcript-row details summary").first.click()
        text = page.inner_text("main")
        assert accounts[me][0] in text
        assert accounts[other][0] not in text
        assert accounts[other][0].split("@")[0][len("test-") :] not in page.content()
    for tab in tabs:
        assert tab.dialogs == []
        tab.page.context.close()


def test_two_runs_from_one_address_have_their_own_servers(
    browser: Any, serve: ServeInstance
) -> None:
    two_runs_from_one_address(browser, serve, exact=True)


def test_two_runs_from_one_address_collide_under_address_binding(
    browser: Any, tmp_path: Path
) -> None:
    inst = start_serve(tmp_path / "var", endpoints={"enabled": False})
    try:
        two_runs_from_one_address(browser, inst, exact=False)
    finally:
        inst.stop()


def test_basic_flow_works_without_javascript(browser: Any, serve: ServeInstance) -> None:
    tab = new_tab(browser, javascript=False)
    page = tab.page
    page.goto(serve.url)
    page.click("text=Start the guided test")
    user, password = account(tab, serve)
    page.click("text=Begin with step 1")
    start(tab, 1)
    assert imap_session(serve, user, password) == "tls-login"
    finish(tab, "PASS")  # reloads until the server-rendered page offers "finish"
    page.click("#next")
    start(tab, 2)
    answer(tab, cannot_connect=True)
    finish(tab, "NOT_APPLICABLE")
    page.goto(page.url.split("/step/")[0])
    page.locator("summary", has_text="Delete my data").click()
    page.click("text=Delete everything of this test")
    assert "deleted" in page.inner_text("h1")
    page.context.close()


UNLABELLED = """() => Array.from(
        document.querySelectorAll('input:not([type=hidden]), select, textarea'))
    .filter((el) => el.labels.length === 0).map((el) => el.outerHTML)"""


def test_keyboard_and_labels(browser: Any, serve: ServeInstance) -> None:
    tab = new_tab(browser)
    page = tab.page
    page.goto(serve.url)
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    for _ in range(40):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.textContent") == "Start the guided test":
            break
    else:
        raise AssertionError("the guided test button is not reachable with the keyboard")
    page.keyboard.press("Enter")
    page.wait_for_url(re.compile(r"/run/[A-Za-z0-9_-]{20,}$"))
    assert page.evaluate(UNLABELLED) == []
    page.click("text=Begin with step 1")
    start(tab, 1)
    assert page.evaluate(UNLABELLED) == []
    page.goto(serve.url)
    assert page.evaluate(UNLABELLED) == []
    page.context.close()


def test_guided_run_with_the_more_tests(browser: Any, serve: ServeInstance) -> None:
    """The optional "more tests" part: ticked on the landing page, it follows the nine standard
    steps with the same step pages (titles and plain-language explanations of the new cases)."""
    tab = new_tab(browser)
    page = tab.page
    page.goto(serve.url)
    page.check("input[name=protocol][value=imap]")
    page.check("input[name=more]")
    page.click("text=Start the guided test")
    page.wait_for_url(re.compile(r"/run/[A-Za-z0-9_-]{20,}$"))
    user, password = account(tab, serve)
    assert "encryption offer removed from a careful server" in page.inner_text("body")
    page.click("text=Begin with step 1")
    for n in range(1, 10):
        skip(tab, n)
    assert page.inner_text("h1").startswith("Step 10:"), page.inner_text("h1")
    assert "careful server" in page.inner_text("body")
    start(tab, 10)
    # imaplib logs in although the server says LOGINDISABLED
    assert imap_session(serve, user, password).startswith("error")
    finish(tab, "FAIL")
    assert "LOGINDISABLED" in page.inner_text("body")
    page.context.close()
