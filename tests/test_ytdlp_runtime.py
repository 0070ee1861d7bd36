"""yt-dlp can read today's YouTube: its JS runtime (deno) and EJS solver scripts, offline.

Tests never reach YouTube, so the only way to catch a worker that lacks
either is to ask yt-dlp's own detection, configured exactly as the fetcher
configures it: its verbose report, its challenge-provider registry, and the
deno command its provider really runs. The same command is used to prove
that the player code deno runs can reach neither the network nor the disk.
"""

import json
import os
from datetime import date
from pathlib import Path

import pytest

from backend.core.ytdlp_age import STALE_AFTER_DAYS, age_days, release_date, stale_warning
from tests.media_server import MediaServer
from worker.pipeline import ytdlp_runtime
from worker.pipeline.fetcher import _options


class _Lines:
    """A yt-dlp logger that keeps every line (debug included)."""

    def __init__(self):
        self.lines: list[str] = []

    def debug(self, message):
        self.lines.append(message)

    info = warning = error = debug


def _fetcher_ydl(tmp_path, logger, **extra):
    import yt_dlp

    options = _options(tmp_path, 0.0, 6.0, 5.0)
    options.update(logger=logger, verbose=True, quiet=False, no_warnings=False, **extra)
    return yt_dlp.YoutubeDL(options)


def _deno_provider(ydl):
    """yt-dlp's own deno challenge provider, registered the way its YouTube extractor does."""
    from yt_dlp.extractor.youtube.jsc._director import initialize_jsc_director

    director = initialize_jsc_director(ydl.get_info_extractor("Youtube"))
    providers = {p.PROVIDER_NAME: p for p in director.providers.values()}
    return providers["deno"]


def test_fetcher_options_name_the_deno_binary_and_allow_no_remote_components():
    options = ytdlp_runtime.ytdlp_options()
    path = options["js_runtimes"]["deno"]["path"]
    assert Path(path).is_absolute() and os.access(path, os.X_OK)
    assert options["remote_components"] == []


def test_verbose_report_names_deno_and_the_ejs_scripts(tmp_path):
    lines = _Lines()
    with _fetcher_ydl(tmp_path, lines) as ydl:
        ydl.print_debug_header()
        _deno_provider(ydl)  # its registry prints the providers it found
    report = "\n".join(lines.lines)
    runtimes = next(line for line in lines.lines if "JS runtimes:" in line)
    assert "deno-" in runtimes and "unsupported" not in runtimes, runtimes
    libraries = next(line for line in lines.lines if "Optional libraries:" in line)
    assert "yt_dlp_ejs-" in libraries, libraries
    providers = next(line for line in lines.lines if "JS Challenge Providers:" in line)
    listed = {entry.strip() for entry in providers.split("JS Challenge Providers:")[1].split(",")}
    assert any(entry.startswith("deno") and "unavailable" not in entry for entry in listed), report


def test_the_solver_scripts_come_from_the_python_package_and_run_in_deno(tmp_path):
    from yt_dlp.extractor.youtube.jsc._builtin.ejs import ScriptSource

    lines = _Lines()
    with _fetcher_ydl(tmp_path, lines) as ydl:
        provider = _deno_provider(ydl)
        assert provider.is_available()
        lib, core = provider._lib_script, provider._core_script
        assert lib.source is ScriptSource.PYPACKAGE and core.source is ScriptSource.PYPACKAGE
        # The very program yt-dlp builds (lib + core), run by its own deno command.
        out = provider._run_js_runtime(
            f"{lib.code}\nObject.assign(globalThis, lib);\n{core.code}\nconsole.log(typeof jsc);\n")
    assert out.strip() == "function"
    assert any("Using challenge solver lib script" in line and "python package" in line for line in lines.lines)
    assert not any("Downloading challenge solver" in line for line in lines.lines)


_ESCAPE_ATTEMPTS = """
const results = {};
async function attempt(name, action) {
  try { await action(); results[name] = "allowed"; }
  catch (error) { results[name] = error?.name || String(error); }
}
await attempt("fetch", () => fetch("http://127.0.0.1:%(port)d/beacon"));
await attempt("import", () => import("http://127.0.0.1:%(port)d/module.js"));
await attempt("connect", () => Deno.connect({ hostname: "127.0.0.1", port: %(port)d }));
await attempt("write", () => Deno.writeTextFileSync(%(target)s, "escaped"));
await attempt("read", () => Deno.readTextFileSync(%(secret)s));
await attempt("env", () => Deno.env.get("HOME"));
await attempt("run", () => new Deno.Command("/bin/true").outputSync());
console.log(JSON.stringify(results));
"""


def test_deno_as_ytdlp_runs_it_can_reach_neither_network_nor_files(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("host secret")
    target = tmp_path / "written.txt"
    with MediaServer("127.0.0.1") as server:
        server.add("/beacon", b"hello", "text/plain")
        server.add("/module.js", b"export const x = 1;", "text/javascript")
        with _fetcher_ydl(tmp_path, _Lines()) as ydl:
            provider = _deno_provider(ydl)
            out = provider._run_js_runtime(_ESCAPE_ATTEMPTS % {
                "port": server.port, "target": json.dumps(str(target)), "secret": json.dumps(str(secret))})
        requests = list(server.requests)
    results = json.loads(out.strip().splitlines()[-1])
    assert set(results) == {"fetch", "import", "connect", "write", "read", "env", "run"}
    assert "allowed" not in results.values(), results
    # NotCapable is deno's refusal for a permission it was not granted; remote imports are refused
    # by --no-remote (a TypeError naming the import) before any connection is made.
    assert {k: v for k, v in results.items() if k != "import"} == dict.fromkeys(
        ["fetch", "connect", "write", "read", "env", "run"], "NotCapable"), results
    assert requests == []  # not one byte reached the server
    assert not target.exists()


def test_report_is_what_the_heartbeat_carries():
    report = ytdlp_runtime.report()
    assert report["js_runtime"].startswith("deno ")
    assert report["ejs"] and report["yt_dlp"]
    assert report["yt_dlp_age_days"] == age_days(report["yt_dlp"])


def test_stale_yt_dlp_warning():
    today = date(2026, 11, 29)
    assert release_date("2026.10.26") == date(2026, 10, 26)
    assert release_date("2026.10.26.1") == date(2026, 10, 26)
    assert release_date("not-a-date") is None
    assert stale_warning("2026.10.26", today) is None
    assert stale_warning(f"{date.fromordinal(today.toordinal() - STALE_AFTER_DAYS):%Y.%m.%d}", today) is None
    warning = stale_warning("2026.08.01", today)
    assert "120 days old" in warning and "make update-ytdlp" in warning
    assert stale_warning(None, today) is None and stale_warning("weird", today) is None


@pytest.mark.parametrize("version", ["2026.08.01"])
def test_maintenance_warns_about_a_worker_with_an_old_yt_dlp(services, version, caplog):
    from backend.core import heartbeat
    from backend.core.maintenance import check_ytdlp_age

    heartbeat.write(services.redis, "old-worker", {"yt_dlp": version}, 10)
    try:
        with caplog.at_level("WARNING", logger="backend.core.maintenance"):
            warnings = check_ytdlp_age(services)
    finally:
        heartbeat.remove(services.redis, "old-worker")
    assert any(version in w and "worker old-worker" in w for w in warnings)
    assert any("make update-ytdlp" in record.getMessage() for record in caplog.records)
