"""The documentation site in a real browser: every page renders, every link resolves.

``make docs-check`` builds the site into site/ and runs this file (it is left
out of ``make test``, which builds the site but opens no browser). It serves
site/ from a local http.server on a free port and opens each page in headless
Chromium, which may reach nothing but 127.0.0.1: the site must work offline.
"""

from __future__ import annotations

import inspect
import os
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urldefrag, urlsplit

import pytest

import daemon_db
from tests import chromium

pytestmark = pytest.mark.browser

ROOT = Path(__file__).parent.parent
SITE = Path(os.environ.get("DAEMON_DB_SITE", ROOT / "site"))
NOT_FOUND_PAGE = "/404.html"
# Text that only shows when an include, a reference entry or a help block was not expanded.
UNEXPANDED = ("--8<--", "::: daemon_db", "<!-- help")

FACTS = """(() => {
  const article = document.querySelector("article");
  return {
    h1: [...document.querySelectorAll("article h1")].map(h => h.textContent.trim()),
    text: article ? article.innerText : "",
    links: [...document.querySelectorAll("a[href]")].map(a => a.href),
    ids: [...document.querySelectorAll("[id]")].map(e => e.id),
    brokenImages: [...document.images].filter(i => !i.complete || !i.naturalWidth).map(i => i.src),
    themed: getComputedStyle(document.querySelector(".md-header")).position,
  };
})()"""


@dataclass
class Page:
    """A page of the site as the browser rendered it."""

    path: str
    load: chromium.Load
    facts: dict[str, Any]

    @property
    def ids(self) -> set[str]:
        return set(self.facts["ids"])


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def site_url() -> Iterator[str]:
    if not (SITE / "index.html").is_file():
        pytest.fail(f"no built site in {SITE}: run make docs first")
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(QuietHandler, directory=str(SITE)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.fixture(scope="module")
def browser() -> Iterator[chromium.Browser]:
    binary = chromium.find()
    if binary is None:
        pytest.fail("Chromium is not installed: make docs-check installs Debian's chromium")
    with chromium.Browser(binary) as opened:
        yield opened


@pytest.fixture(scope="module")
def pages(site_url: str, browser: chromium.Browser) -> dict[str, Page]:
    """Every HTML page of the built site, rendered, by path ("/", "/cli/", "/404.html")."""
    rendered = {}
    for html in sorted(SITE.rglob("*.html")):
        path = "/" + html.relative_to(SITE).as_posix().removesuffix("index.html")
        load = browser.load(site_url + path)
        rendered[path] = Page(path, load, browser.evaluate(FACTS))
    return rendered


def test_the_site_has_every_page_of_the_navigation(pages: dict[str, Page]) -> None:
    expected = {
        "/",
        "/getting-started/",
        "/resuming/",
        "/reference/",
        "/cli/",
        "/operations/",
        "/design/",
        "/figures/",
        NOT_FOUND_PAGE,
    }
    assert set(pages) == expected


def test_every_page_renders_without_errors(pages: dict[str, Page]) -> None:
    problems = []
    for page in pages.values():
        facts, load = page.facts, page.load
        problems += [f"{page.path}: {failure}" for failure in load.failed + load.errors]
        if len(facts["h1"]) != 1:
            problems.append(f"{page.path}: {len(facts['h1'])} h1 headings")
        if page.path != NOT_FOUND_PAGE and len(facts["text"]) < 500:
            problems.append(f"{page.path}: only {len(facts['text'])} characters of text")
        if facts["themed"] != "sticky":
            problems.append(f"{page.path}: the theme's stylesheet is not applied")
        problems += [f"{page.path}: broken image {src}" for src in facts["brokenImages"]]
        problems += [f"{page.path}: {text!r} left" for text in UNEXPANDED if text in facts["text"]]
    assert not problems, "\n".join(problems)


def test_nothing_is_fetched_from_another_host(pages: dict[str, Page], site_url: str) -> None:
    elsewhere = [
        f"{page.path}: {url}"
        for page in pages.values()
        for url in page.load.requests
        if not url.startswith((site_url + "/", "data:", "blob:", "about:"))
    ]
    assert not elsewhere, "\n".join(elsewhere)


def test_every_internal_link_and_anchor_resolves(pages: dict[str, Page], site_url: str) -> None:
    broken = []
    for page in pages.values():
        for link in sorted(set(page.facts["links"])):
            if not link.startswith(site_url + "/"):
                continue  # another site: the theme's credits (never loaded, see above)
            address, anchor = urldefrag(link)
            path = urlsplit(address).path
            if path in pages:
                if anchor and anchor not in pages[path].ids:
                    broken.append(f"{page.path}: {link}: no element with id {anchor!r}")
            elif (status := _status(address)) != 200:
                broken.append(f"{page.path}: {link}: HTTP {status}")
    assert not broken, "\n".join(broken)


def test_every_page_is_reachable_from_the_home_page(pages: dict[str, Page], site_url: str) -> None:
    reached, todo = {"/"}, ["/"]
    while todo:
        for link in pages[todo.pop()].facts["links"]:
            path = urlsplit(urldefrag(link)[0]).path
            if link.startswith(site_url + "/") and path in pages and path not in reached:
                reached.add(path)
                todo.append(path)
    assert set(pages) - reached == {NOT_FOUND_PAGE}


def test_the_reference_shows_every_public_name(pages: dict[str, Page]) -> None:
    ids = pages["/reference/"].ids
    public = [f"daemon_db.{name}" for name in daemon_db.__all__]
    public += [f"daemon_db.DB.{name}" for name, _ in inspect.getmembers(daemon_db.DB)]
    missing = [name for name in public if "._" not in name and name not in ids]
    assert not missing, "\n".join(missing)


def test_search_works_offline(browser: chromium.Browser, site_url: str) -> None:
    load = browser.load(f"{site_url}/?q=resumable_runs")
    assert load.failed + load.errors == []
    found = browser.wait_for(
        "[...document.querySelectorAll('.md-search-result__item a')].map(a => a.href)"
        ".filter(href => href.includes('/reference/')).length"
    )
    assert found, "searching resumable_runs finds nothing on the reference page"


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as exc:
        return exc.code
