"""What yt-dlp needs to read today's YouTube, and a report of what it found.

Since 2025.11.12 yt-dlp solves YouTube's JavaScript challenges (the "n" and
signature functions in the player) by running its EJS solver scripts in an
external JavaScript runtime; without both, YouTube offers no usable audio
formats ("Requested format is not available"). Segue ships both as Python
packages, so nothing is fetched at run time:

- the scripts: ``yt-dlp-ejs`` (installed by the ``yt-dlp[default]`` extra);
- the runtime: PyPI's ``deno`` wheel, which carries the deno binary.

``ytdlp_options`` hands the runtime to yt-dlp by path (its ``js_runtimes``
option), so detection does not depend on ``PATH``, and allows no remote
components (yt-dlp must never download solver code from npm or GitHub).

Why running YouTube's player code is safe: yt-dlp starts deno as
``deno run --no-prompt --no-remote --no-npm --cached-only --no-config ... -``
with no ``--allow-*`` flag, and deno grants nothing that is not allowed:
no network, no file reads or writes, no environment, no subprocesses
(``tests/test_ytdlp_runtime.py`` runs yt-dlp's own command and checks each).
The player code itself is downloaded by yt-dlp through Segue's egress guard.
"""

from __future__ import annotations

import functools
import shutil

from backend.core.ytdlp_age import age_days, stale_warning

__all__ = ["deno_path", "ytdlp_options", "report", "stale_warning"]


@functools.cache
def deno_path() -> str | None:
    """The deno binary from the ``deno`` wheel, else one on ``PATH``, else None."""
    try:
        import deno

        path = deno.find_deno_bin()
        if path:
            return str(path)
    except (ImportError, OSError, RuntimeError, FileNotFoundError):
        pass
    return shutil.which("deno")


def ytdlp_options() -> dict:
    """yt-dlp options that enable the JS runtime by path and forbid remote components."""
    path = deno_path()
    return {
        # Without a path yt-dlp looks for deno on PATH; with one it uses exactly that binary.
        "js_runtimes": {"deno": {"path": path} if path else {}},
        "remote_components": [],
    }


def report() -> dict:
    """The yt-dlp version and the JS runtime and solver scripts yt-dlp itself detects.

    Uses yt-dlp's own runtime detection (the object its verbose report
    prints), so a binary that is present but unusable is reported as missing.
    """
    import yt_dlp
    from yt_dlp.version import __version__

    out: dict = {"yt_dlp": __version__, "yt_dlp_age_days": age_days(__version__),
                 "js_runtime": None, "ejs": None}
    options = dict(ytdlp_options(), quiet=True, no_warnings=True)
    try:
        with yt_dlp.YoutubeDL(options) as ydl:
            runtime = ydl._js_runtimes.get("deno")
            info = runtime.info if runtime is not None else None
            if info is not None and info.supported:
                out["js_runtime"] = f"{info.name} {info.version}"
    except Exception as exc:  # a report must never stop the worker
        out["js_runtime_error"] = str(exc)[:200]
    try:
        import yt_dlp_ejs

        out["ejs"] = str(yt_dlp_ejs.version)
    except ImportError:
        pass
    return out
