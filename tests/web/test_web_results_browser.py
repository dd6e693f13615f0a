"""The results page at a glance, in a real browser (Debian's chromium through Playwright), at
1280 and 390 px: the headline, the advice grouped by protocol, one label and one colour per
outcome (the same on the step page), no internal names outside the technical details, no
sideways scroll on any page at 390 px, the offline API docs and the site icon.

One run through the JSON API covers every outcome, with stdlib mail clients doing what a
careless and a careful app would. Screenshots go to ``var/screenshots/`` (not committed).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from web_kit import Tab, imap_session, launch_browser, new_tab, screenshot

from conftest import ServeInstance, start_serve
from mailtls.web.outcomes import OUTCOMES

pytestmark = [pytest.mark.timeout(150), pytest.mark.browser]

# step -> (what the scripted client does, expected outcome key)
PLAN = [
    ("baseline", "secure", "pass"),
    ("t1", "careless", "fail"),
    ("t1", "strict", "stopped"),
    ("t2", "prompt", "warn"),
    ("t3", "cannot_connect", "noconnect"),
    ("t4", "nothing", "unclear"),
    ("t2", "skip", "skipped"),
]
# the colour of each outcome's badge (style.css, --o-*): one colour per outcome, green = safe
COLOURS = {
    "pass": "rgb(23, 117, 58)",
    "stopped": "rgb(23, 117, 58)",
    "fail": "rgb(180, 35, 24)",
    "warn": "rgb(138, 90, 0)",
    "unclear": "rgb(91, 60, 196)",
    "noconnect": "rgb(79, 91, 104)",
    "skipped": "rgb(255, 255, 255)",
}
INTERNAL = ("plaintext_auth", "tls_auth", "starttls_disrupted", "user_prompt", "two_phase",
            "immediate", "aborted_after_downgrade", "INCONCLUSIVE", "NOT_APPLICABLE")  # fmt: skip


@dataclass
class Run:
    id: str
    result: str
    share: str


@pytest.fixture(scope="module")
def serve_mod(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServeInstance]:
    inst = start_serve(tmp_path_factory.mktemp("results") / "var")
    try:
        yield inst
    finally:
        inst.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with launch_browser() as b:
        yield b


def _make_run(inst: ServeInstance) -> Run:
    api = httpx.Client(base_url=inst.url + "/api", timeout=20)
    body = {"steps": [{"scenario": "immediate", "testcase": t} for t, _, _ in PLAN]}
    run = api.post("/runs", json=body).json()
    inst.remember(run)  # the run's own endpoints
    user, password = run["account"]["username"], run["account"]["password"]
    for n, (_testcase, action, _expected) in enumerate(PLAN, 1):
        path = f"/runs/{run['id']}/steps/{n}"
        if action == "skip":
            api.post(f"{path}/skip")
            continue
        api.post(f"{path}/start")
        if action in ("secure", "careless", "strict"):
            imap_session(inst, user, password, strict=action == "strict")
        elif action in ("prompt", "cannot_connect"):
            answers = {"prompt_shown": action == "prompt", "cannot_connect": action != "prompt"}
            api.post(f"{path}/report", json=answers)
        api.post(f"{path}/finish")
    result = run["links"]["result"]
    share = re.search(r'href="(/s/[^"]+)" id="share-link"', httpx.get(result).text)
    assert share, "no shareable link on the result page"
    return Run(run["id"], result, inst.url + share.group(1))


@pytest.fixture(scope="module")
def run(serve_mod: ServeInstance) -> Run:
    return _make_run(serve_mod)


def no_horizontal_scroll(tab: Tab) -> None:
    width = tab.page.evaluate("document.documentElement.scrollWidth")
    # the size the page was given: a mobile browser widens its layout viewport (and
    # innerWidth) to fit content that is too wide, so innerWidth would hide the overflow
    viewport = tab.page.viewport_size["width"]
    assert width <= viewport, f"{tab.page.url} scrolls sideways: {width} > {viewport}"


def badge_colour(tab: Tab, selector: str) -> str:
    return str(tab.page.eval_on_selector(selector, "e => getComputedStyle(e).backgroundColor"))


@pytest.mark.parametrize("phone", [False, True], ids=["1280px", "390px"])
def test_results_at_a_glance(browser: Any, run: Run, phone: bool) -> None:
    tab = new_tab(browser, phone=phone)
    page = tab.page
    page.goto(run.result)
    no_horizontal_scroll(tab)
    # the headline comes first: one sentence, the worst outcome's label and colour
    first = page.locator("main > section").first
    assert first.get_attribute("id") == "summary"
    assert first.get_attribute("data-outcome") == "fail"
    assert "in 1 of 5 attacks" in page.inner_text("#summary")
    assert badge_colour(tab, "#summary .verdict") == COLOURS["fail"]
    # advice grouped by protocol, said once, linked to the fixes per app
    assert page.locator("#advice-imap").count() == 1
    advice = page.inner_text("#advice")
    assert advice.count("connection security to 'SSL/TLS'") == 1
    assert "answer 'no'" in advice
    links = page.locator("#fix-links a")
    assert links.count() == 5
    # one row per step: the outcome's label and colour; internal names only in the details
    for n, (_t, _a, expected) in enumerate(PLAN, 1):
        row = page.locator(f"#step-{n}")
        assert row.get_attribute("data-outcome") == expected, n
        assert row.locator(".verdict").inner_text() == OUTCOMES[expected].label
        assert badge_colour(tab, f"#step-{n} .verdict") == COLOURS[expected], n
    screenshot(page, f"glance-{'phone' if phone else 'desktop'}")
    page.evaluate(
        "document.querySelectorAll('details.tech, .transcript-row').forEach(e => e.remove())"
    )
    shown = page.inner_text("main")
    for name in INTERNAL:
        assert name not in shown, name
    page.context.close()


def test_step_pages_use_the_same_label_and_colour(browser: Any, run: Run, serve_mod: Any) -> None:
    tab = new_tab(browser)
    for n, (_t, _a, expected) in enumerate(PLAN, 1):
        if expected == "skipped":
            continue
        tab.page.goto(f"{serve_mod.url}/run/{run.id}/step/{n}")
        assert tab.page.inner_text("#verdict .verdict") == OUTCOMES[expected].label, n
        assert badge_colour(tab, "#verdict .verdict") == COLOURS[expected], n
    tab.page.goto(f"{serve_mod.url}/run/{run.id}")
    run_page = {b.inner_text() for b in tab.page.locator(".steps .verdict").all()}
    assert run_page == {OUTCOMES[e].label for _t, _a, e in PLAN}
    tab.page.context.close()


def test_an_armed_attack_is_never_green(browser: Any, serve_mod: ServeInstance) -> None:
    api = httpx.Client(base_url=serve_mod.url + "/api", timeout=20)
    made = api.post("/runs", json={"steps": [{"scenario": "two_phase", "testcase": "t1"}]}).json()
    serve_mod.remember(made)
    api.post(f"/runs/{made['id']}/steps/1/start")
    user, password = made["account"]["username"], made["account"]["password"]
    assert imap_session(serve_mod, user, password) == "tls-login"  # arms the attack
    tab = new_tab(browser, phone=True)
    tab.page.goto(f"{serve_mod.url}/run/{made['id']}/step/1")
    assert "Attack active" in tab.page.inner_text("#armed")
    colour = badge_colour(tab, "#armed")
    assert colour not in (COLOURS["pass"],) and "117" not in colour, colour
    no_horizontal_scroll(tab)
    screenshot(tab.page, "step-armed-phone")
    tab.page.context.close()


def test_no_page_scrolls_sideways_at_390px(
    browser: Any, run: Run, serve_mod: ServeInstance
) -> None:
    api = httpx.Client(base_url=serve_mod.url + "/api", timeout=20)
    fresh = api.post("/runs", json={"plan": "guided"}).json()
    api.post(f"/runs/{fresh['id']}/steps/1/start")  # step 1 active, step 2 pending
    pages = {
        "landing": "/",
        "run": f"/run/{fresh['id']}",
        "step-active": f"/run/{fresh['id']}/step/1",
        "step-pending": f"/run/{fresh['id']}/step/2",
        "step-finished": f"/run/{run.id}/step/2",
        "result": run.result,
        "shared": run.share,
        "fix": "/help/fix",
        "apidocs": "/api/docs",
    }
    for name, path in pages.items():
        tab = new_tab(browser, phone=True)
        tab.page.goto(path if path.startswith("http") else serve_mod.url + path)
        if name == "apidocs":
            tab.page.wait_for_selector(".opblock")
        no_horizontal_scroll(tab)
        if name in ("step-active", "fix"):
            screenshot(tab.page, f"{name}-390")
        tab.page.context.close()


def test_api_docs_render_the_operations_offline(browser: Any, serve_mod: ServeInstance) -> None:
    tab = new_tab(browser)
    page = tab.page
    errors: list[str] = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    outside: list[str] = []
    page.on(
        "request",
        lambda r: outside.append(r.url) if not r.url.startswith(serve_mod.url) else None,
    )
    page.goto(serve_mod.url + "/api/docs")
    page.wait_for_selector(".opblock", timeout=15_000)
    paths = {p.inner_text() for p in page.locator(".opblock-summary-path").all()}
    assert "/api/runs" in paths and "/api/runs/{run_id}/steps/{n}/finish" in paths
    assert page.locator(".opblock").count() >= 8
    assert outside == [] and errors == []  # nothing from a CDN, nothing the CSP blocked
    csp = httpx.get(serve_mod.url + "/api/docs").headers["content-security-policy"]
    assert "unsafe-inline" not in csp and "script-src 'self'" in csp
    screenshot(page, "apidocs-desktop")
    page.context.close()


def test_favicon_is_served(serve_mod: ServeInstance) -> None:
    resp = httpx.get(serve_mod.url + "/favicon.ico")
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "image/x-icon"
    assert resp.content[:4] == b"\x00\x00\x01\x00"  # an ICO file
    assert Path(__file__).resolve().parents[2].joinpath("src/mailtls/web/static/favicon.ico")
