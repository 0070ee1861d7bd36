"""The status page at /status in a real Chromium: every part live against the full stack, parts that are down
shown in red against an API with no worker and no sidecar, refreshing by itself; wall-screen and phone shots."""

from __future__ import annotations

from backend.dev.embedded import free_port
from tests.conftest import serve_app
from tests.scenarios.browser import (PHONE, WALL, browser, full_stack, horizontal_overflow,  # noqa: F401
                                     open_page, screenshot)

COMPONENTS = ("api", "mongodb", "redis", "pytorch", "sidecar")


def tile_states(page) -> dict[str, str]:
    return page.evaluate("""() => Object.fromEntries([...document.querySelectorAll('.tile')]
        .map(t => [t.dataset.component, t.dataset.state]))""")


def test_status_page_shows_every_part_live_and_refreshes(browser, full_stack):
    watched = open_page(browser, f"{full_stack.api}/status", WALL)
    page = watched.page
    page.wait_for_function("[...document.querySelectorAll('.tile')].every(t => t.dataset.state === 'live')",
                           timeout=30_000)
    assert tile_states(page) == {name: "live" for name in COMPONENTS}
    assert page.get_attribute("#hero", "data-state") == "live"
    assert page.inner_text("#hero-title") == "All systems live"
    assert page.inner_text("#stat-workers") == "1"
    assert page.inner_text("#stat-device") == "cpu"
    assert page.inner_text("#stat-queue").isdigit()
    assert "tiny-mono" in page.inner_text("#models")
    rows = page.locator("#workers tr")
    assert rows.count() == 1 and "cpu" in rows.first.inner_text()
    from worker.pipeline.ytdlp_runtime import report

    ytdlp = report()
    assert f"{ytdlp['yt_dlp']} · {ytdlp['js_runtime']}" in rows.first.inner_text()  # what the worker's yt-dlp detects
    assert "ffmpeg" in page.inner_text('.tile[data-component="sidecar"] .detail')

    # It refreshes itself: new reports arrive without a reload, and the rate appears once two have.
    refreshes = int(page.get_attribute("html", "data-refreshes"))
    page.wait_for_function(f"Number(document.documentElement.dataset.refreshes) >= {refreshes + 2}", timeout=15_000)
    assert page.inner_text("#stat-rate") != "–"
    assert page.inner_text("#updated").startswith("updated")
    screenshot(page, "status-wall-live")

    page.set_viewport_size(PHONE)
    page.wait_for_timeout(300)
    assert horizontal_overflow(page) <= 0
    screenshot(page, "status-phone-live")
    watched.assert_clean()
    watched.close()


def test_status_page_shows_parts_that_are_down(browser, settings):
    """No worker heartbeats (PyTorch down, so /health answers 503 with its report) and no sidecar listening."""
    from backend.api.app import create_app

    app = create_app(settings=settings.with_(express_port=free_port()))
    with serve_app(app) as base:
        watched = open_page(browser, f"{base}/status", WALL)
        page = watched.page
        page.wait_for_function("document.getElementById('hero').dataset.state === 'down'", timeout=15_000)
        page.wait_for_function("document.querySelector('.tile[data-component=sidecar]').dataset.state === 'down'")
        states = tile_states(page)
        assert states == {"api": "live", "mongodb": "live", "redis": "live", "pytorch": "down", "sidecar": "down"}
        assert page.inner_text("#hero-title") == "PyTorch, Sidecar are down"
        # Down is red, live is green: the colours the tiles actually render.
        colour = page.eval_on_selector('.tile[data-component="pytorch"] .state', "e => getComputedStyle(e).color")
        assert colour == "rgb(255, 93, 108)"
        colour = page.eval_on_selector('.tile[data-component="redis"] .state', "e => getComputedStyle(e).color")
        assert colour == "rgb(61, 220, 151)"
        assert page.inner_text("#stat-workers") == "0"
        assert "No worker" in page.inner_text("#workers")
        screenshot(page, "status-wall-degraded")
        # The 503 of /health and the refused sidecar connection are what this page is about, not page errors.
        watched.assert_clean(allowed=("status of 503", "ERR_CONNECTION_REFUSED"))
        watched.close()


def test_status_page_shows_a_model_that_failed_to_load(browser, settings):
    """A live worker whose default model could not be loaded: every part answers, the page says why it is down."""
    import time

    from backend.core import heartbeat
    from backend.api.app import create_app

    app = create_app(settings=settings.with_(express_port=free_port()))
    services = app.extensions["segue"]
    reason = "it is not in the local Hugging Face cache and the hub could not be reached"
    heartbeat.write(services.redis, "offline-worker", {
        "torch_ok": True, "device": "cpu", "torch_version": "2.13.0", "host": "gpu-1", "pid": 7, "ready": True,
        "models_loaded": [], "models_failed": {settings.default_model: reason},
        "yt_dlp": "2026.01.29", "yt_dlp_age_days": 304, "js_runtime": None, "ejs": None,
        "at": time.time()}, 30)
    with serve_app(app) as base:
        watched = open_page(browser, f"{base}/status", WALL)
        page = watched.page
        page.wait_for_function("document.querySelectorAll('#model-failures li').length === 1", timeout=15_000)
        assert reason in page.inner_text("#model-failures")
        assert page.get_attribute('.tile[data-component="pytorch"]', "data-state") == "live"
        assert page.get_attribute("#hero", "data-state") == "down"
        assert "Default model" in page.inner_text("#hero-title")
        row = page.locator("#workers tr").first.inner_text()
        assert "(failed)" in row and "304 days old" in row and "no JS runtime" in row
        screenshot(page, "status-model-failed")
        watched.close()
