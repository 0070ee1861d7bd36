"""MkDocs hook: the settings page's table, generated at build time from ``backend/core/settings.py``.

``docs/settings.md`` holds the marker below; this hook replaces it with one row per entry of
``SETTINGS`` (variable, default, help), so the page lists exactly what the code reads and cannot drift:
a setting added to the table appears on the next build. Each row also links to the pages that mention
the variable, found by scanning their Markdown, so the details written where they belong (the GPU page
for ``SEGUE_CUDA_GRAPHS``, the webhooks page for ``SEGUE_WEBHOOK_SECRET``...) are one click away.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from mkdocs.exceptions import PluginError

ROOT = Path(__file__).resolve().parents[2]
PAGE = "settings.md"
MARKER = "<!-- settings-table -->"

_pages: dict[str, tuple[str, str]] = {}  # src_uri -> (title, markdown) of every other page


def load_settings():
    """The settings module of this checkout (the hook runs in mkdocs' process, not from the repo root)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from backend.core import settings

    return settings


def default_text(setting) -> str:
    """The default as Markdown, written the way the environment variable takes it."""
    value = setting.default
    if isinstance(value, bool):
        return "`1`" if value else "`0`"
    if isinstance(value, tuple):
        if not value:
            return "empty"
        if all(isinstance(item, tuple) for item in value):  # (model, description) pairs
            return "; ".join(f"`{k}={v}`" for k, v in value)
        return ", ".join(f"`{item}`" for item in value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value)
    return f"`{text}`" if text else "empty"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table(pages: dict[str, tuple[str, str]] | None = None) -> str:
    """The Markdown table: one row per setting, in the order of ``SETTINGS``."""
    settings = load_settings()
    pages = _pages if pages is None else pages
    rows = ["| variable | default | meaning | see |", "|---|---|---|---|"]
    for s in settings.SETTINGS:
        mentions = [f"[{title}]({uri})" for uri, (title, text) in sorted(pages.items())
                    if f"`{s.env}`" in text or f"`{s.env}=" in text]
        rows.append(f"| `{s.env}` | {_cell(default_text(s))} | {_cell(s.help)} | {', '.join(mentions)} |")
    return "\n".join(rows)


def _title(uri: str, text: str) -> str:
    for line in text.splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return uri


def on_config(config):
    # `make docs` rebuilds in the same process when settings.py changes (mkdocs.yml watches it):
    # read the table afresh for each build.
    module = sys.modules.get("backend.core.settings")
    if module is not None:
        importlib.reload(module)
    return config


def on_files(files, config):
    _pages.clear()
    for f in files.documentation_pages():
        if f.src_uri != PAGE:
            text = f.content_string
            _pages[f.src_uri] = (_title(f.src_uri, text), text)
    return files


def on_page_markdown(markdown, page, config, files):
    if page.file.src_uri != PAGE:
        return markdown
    if MARKER not in markdown:
        raise PluginError(f"{PAGE} lost its {MARKER} marker: the settings table has nowhere to go")
    return markdown.replace(MARKER, table())
