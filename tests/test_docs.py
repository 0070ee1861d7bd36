"""The docs site (docs/, mkdocs.yml) and the README that fronts it.

The site is built once with ``mkdocs build --strict``, the way ``make docs`` renders it: a link to a
missing page or anchor, a page left out of the nav or a nav entry without a page fails the build.
mkdocs is part of the ``test`` extra, so a missing mkdocs fails here rather than skipping.
"""

from __future__ import annotations

import html
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from backend.core import settings as settings_module

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
HOOK = ROOT / "docs" / "hooks" / "settings_table.py"


def build(config: Path, site_dir: Path) -> subprocess.CompletedProcess:
    # NO_MKDOCS_2_WARNING: Material's end-of-life banner, printed on every build, is noise in a log.
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config),
                           "--site-dir", str(site_dir)], cwd=config.parent, capture_output=True, text=True,
                          timeout=300, env=env)


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    result = build(ROOT / "mkdocs.yml", out)
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{result.stdout}\n{result.stderr}"
    return out


def nav_pages() -> list[str]:
    """Every page the nav lists, as paths under docs/."""
    def walk(entries):
        for entry in entries:
            value = next(iter(entry.values())) if isinstance(entry, dict) else entry
            if isinstance(value, list):
                yield from walk(value)
            else:
                yield value
    return list(walk(yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"]))


def text_of(fragment: str) -> str:
    """Visible text of an HTML fragment, whitespace dropped (tags leave spaces of their own)."""
    return "".join(html.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


def plain(markdown: str) -> str:
    """What a Markdown cell shows, compared like ``text_of``: code marks and whitespace dropped."""
    return "".join(markdown.replace("`", "").replace("\\|", "|").split())


def test_every_nav_page_is_built(site):
    pages = nav_pages()
    assert len(pages) == len(set(pages)) >= 20
    for page in pages:
        built = site / ("index.html" if page == "index.md" else page.removesuffix(".md") + "/index.html")
        assert built.is_file(), f"{page} was not built"


def test_the_pages_other_branches_write_into_are_in_the_nav():
    assert {"durability.md", "deploy-compose.md", "deploy-kubernetes.md", "cpu-engine.md",
            "settings.md"} <= set(nav_pages())


def test_every_setting_is_on_the_settings_page_with_its_default_and_help(site):
    page = (site / "settings" / "index.html").read_text()
    rows = {}
    for row in re.findall(r"<tr>(.*?)</tr>", page, re.S):
        cells = [text_of(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]
        if cells:
            rows[cells[0]] = cells
    hook = load_hook()
    missing = [s.env for s in settings_module.SETTINGS if s.env not in rows]
    assert not missing, f"the settings page lacks: {missing}"
    for s in settings_module.SETTINGS:
        _, default, meaning, _ = rows[s.env]
        assert default == plain(hook.default_text(s)), s.env
        assert meaning == plain(s.help), s.env
    assert len(rows) == len(settings_module.SETTINGS)


def test_the_settings_page_links_to_where_a_setting_is_explained(site):
    page = (site / "settings" / "index.html").read_text()
    row = next(r for r in re.findall(r"<tr>(.*?)</tr>", page, re.S) if "<code>SEGUE_WEBHOOK_SECRET</code>" in r)
    assert 'href="../webhooks/"' in row


def load_hook():
    spec = importlib.util.spec_from_file_location("settings_table_hook", HOOK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_setting_added_to_the_code_appears_in_the_generated_table(monkeypatch):
    # Other work adds settings (say SEGUE_DRAIN_SECONDS): the table follows the code with no edit to the docs.
    new = settings_module.Setting("SEGUE_DRAIN_SECONDS", "drain_seconds", 30.0, "Seconds to drain | on SIGTERM.", float)
    monkeypatch.setattr(settings_module, "SETTINGS", settings_module.SETTINGS + (new,))
    table = load_hook().table({"durability.md": ("Durability", "set `SEGUE_DRAIN_SECONDS` to wait longer")})
    assert "| `SEGUE_DRAIN_SECONDS` | `30` | Seconds to drain \\| on SIGTERM. | [Durability](durability.md) |" in table
    assert table.count("\n") == len(settings_module.SETTINGS) + 1


def test_the_strict_build_refuses_a_broken_link(tmp_path):
    # The build above passing means something only if a broken link does fail it.
    shutil.copytree(ROOT / "docs", tmp_path / "docs")
    shutil.copy(ROOT / "mkdocs.yml", tmp_path / "mkdocs.yml")
    (tmp_path / "backend").symlink_to(ROOT / "backend")  # the settings hook imports the settings table
    with (tmp_path / "docs" / "security.md").open("a") as page:
        page.write("\nSee [the page that is not there](no-such-page.md).\n")
    result = build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert result.returncode != 0
    assert "no-such-page.md" in result.stdout + result.stderr


def test_the_readme_is_a_short_front_page_that_links_every_page():
    text = README.read_text()
    assert len(text.splitlines()) <= 200
    missing = [page for page in nav_pages() if f"(docs/{page})" not in text]
    assert not missing, f"the README does not link: {missing}"
    for target in re.findall(r"\]\((docs/[^)#]+)", text):
        assert (ROOT / target).is_file(), f"the README links {target}, which does not exist"


def test_ci_runs_the_readmes_test_command():
    text = README.read_text()
    assert "make run" in text and "make test" in text
    assert (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1] == "make test"
