"""Shared Playwright helpers for the browser tests: Debian's Chromium, pages that record every error, screenshots,
and one full stack (``python -m backend.dev.devstack`` with the tiny model) shared by every browser test module.

Not a test module. Chromium is Debian's ``/usr/bin/chromium`` (``make test`` installs it); Playwright's own
browser download (``playwright install``) is never used.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import ARTIFACTS

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
DESKTOP = {"width": 1440, "height": 960}
PHONE = {"width": 390, "height": 844}
WALL = {"width": 1920, "height": 1080}


def launch_chromium(playwright):
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make test` installs it (apt-get install chromium)")
    return playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


@pytest.fixture(scope="module")
def browser():
    # Module scope: the sync API allows one Playwright instance per thread at a time.
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        yield chromium
        chromium.close()


@dataclass
class WatchedPage:
    """A page plus every problem it reported: uncaught exceptions, console errors, failed requests."""

    page: object
    context: object
    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def assert_clean(self, allowed: tuple[str, ...] = ()) -> None:
        unexpected = [e for e in self.errors if not any(a in e for a in allowed)]
        assert not unexpected, "the page reported errors:\n" + "\n".join(unexpected)

    def close(self) -> None:
        self.context.close()


def open_page(browser, url: str, viewport: dict = DESKTOP, **context_options) -> WatchedPage:
    context = browser.new_context(viewport=viewport, accept_downloads=True, **context_options)
    page = context.new_page()
    watched = WatchedPage(page, context)
    page.on("pageerror", lambda exc: watched.errors.append(f"pageerror: {exc}"))
    page.on("console", lambda msg: msg.type == "error" and watched.errors.append(
        f"console error: {msg.text} @ {msg.location.get('url', '')}"))
    # A request the page itself dropped (ERR_ABORTED: an <audio> switching sources, a stream left) is no failure.
    page.on("requestfailed", lambda req: "ERR_ABORTED" not in (req.failure or "") and watched.errors.append(
        f"request failed: {req.method} {req.url} {req.failure}"))
    page.on("request", lambda req: watched.requests.append(req.url))
    page.goto(url)
    return watched


def screenshot(page, name: str, full_page: bool = True) -> Path:
    """Save a screenshot under test-artifacts/ (kept after the run, for people to look at)."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.evaluate("window.scrollTo(0, 0)")  # a sticky header lands mid-page in a full-page shot taken scrolled
    page.screenshot(path=str(path), full_page=full_page)
    return path


def horizontal_overflow(page) -> int:
    """How many CSS pixels the page is wider than its viewport (0 when nothing sticks out sideways)."""
    return page.evaluate("document.documentElement.scrollWidth - window.innerWidth")


def canvas_ink(page, selector: str) -> float:
    """Fraction of the canvas' pixels that are not transparent: 0 for a blank canvas."""
    return page.eval_on_selector(selector, """canvas => {
        const { data } = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height);
        let inked = 0;
        for (let i = 3; i < data.length; i += 4) if (data[i] > 0) inked += 1;
        return inked / (data.length / 4);
    }""")


# ---------- one full stack for all browser tests ----------

_STACK: dict = {"stack": None, "users": 0}


@pytest.fixture(scope="session")
def full_stack(tiny_model, tmp_path_factory):
    """The whole stack as `make run` starts it (tiny model, loopback URLs allowed), started once per session.

    Each browser test module imports this fixture, which gives pytest one definition per module; the module-level
    registry makes them share a single running stack, stopped when the last user is torn down.
    """
    from tests.scenarios.test_stack import Stack, make_stack_env

    if _STACK["stack"] is None:
        tmp = tmp_path_factory.mktemp("browser-stack")
        env = make_stack_env(tiny_model, tmp / "var", SEGUE_API_WORKERS="1")
        stack = Stack(env, tmp / "stack.log")
        stack.start()
        _STACK["stack"] = stack
    _STACK["users"] += 1
    try:
        yield _STACK["stack"]
    finally:
        _STACK["users"] -= 1
        if _STACK["users"] == 0:
            _STACK["stack"].stop()
            log = Path(_STACK["stack"].log_path)
            if log.exists():  # keep the stack's log beside the screenshots
                ARTIFACTS.mkdir(exist_ok=True)
                shutil.copy(log, ARTIFACTS / "browser-stack.log")
            _STACK["stack"] = None
