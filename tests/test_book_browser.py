"""The built book in headless Chromium: every page loads, figures render, math renders, and no
request leaves localhost.

Uses Debian's `chromium` (scripts/install_system_packages.sh) driven by Playwright's Python API
(environment.yml) with ``executable_path``: Playwright's own browser download (`playwright
install`) is never used. Skipped, saying what to install, when either is missing. The book is the
session fixture ``built_book`` (tests/conftest.py), served over HTTP on 127.0.0.1.

Screenshots of the intro and of the attention_scaling chapter are written to
``$TMPDIR/effx-book-screenshots/`` (or ``EFFX_SCREENSHOT_DIR``) for a human to look at.
"""
from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import tempfile
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from conftest import BOOK_DIR, toc_pages

pytestmark = pytest.mark.browser

#: every page of _toc.yml, plus the pages Sphinx adds (index.html redirects to the root page)
PAGES = [*toc_pages(BOOK_DIR), "index", "search", "genindex"]
SCREENSHOTS = {"intro": "intro", "generated/attention_scaling": "attention_scaling"}
CHROMIUM_CANDIDATES = ["chromium", "chromium-browser", "google-chrome", "google-chrome-stable"]
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-default-apps", "--disable-extensions",
    # belt and braces: even a request the route below missed could not resolve a real host
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1",
]  # Playwright itself adds --headless and --user-data-dir (a fresh temporary folder, below)
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "[::1]"}
#: console errors of the pinned toolchain itself, not of the book (pattern -> why it is tolerated)
KNOWN_CONSOLE_ERRORS = {
    r"Identifier 'THEBE_JS_URL' has already been declared":
        "sphinx-thebe 0.3.1 under Sphinx 7.4 writes its inline config <script> twice on every "
        "page; harmless here (no thebe/launch buttons are used, and thebe itself is never "
        "loaded)",
}
NOT_NETWORK = {"data", "blob", "about", "chrome-extension", "devtools"}


def find_chromium() -> str | None:
    explicit = os.environ.get("EFFX_CHROMIUM")
    if explicit:
        return explicit if Path(explicit).exists() else None
    for name in CHROMIUM_CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


def leaves_localhost(url: str) -> bool:
    parts = urlsplit(url)
    if parts.scheme in NOT_NETWORK:
        return False
    return (parts.hostname or "") not in LOCAL_HOSTS


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def book_url(built_book):
    if not (built_book.html / "index.html").exists():
        pytest.fail("the book was not built (see tests/test_book.py::test_build_succeeds)")
    handler = functools.partial(_QuietHandler, directory=str(built_book.html))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="book-http", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


class Browser:
    """A headless Chromium context that records every request and aborts the external ones."""

    def __init__(self, context):
        self.context = context
        self.requests: list[str] = []
        self.external: list[str] = []
        context.route("**/*", self._route)

    def _route(self, route):
        url = route.request.url
        self.requests.append(url)
        if leaves_localhost(url):
            self.external.append(url)
            route.abort("blockedbyclient")
        else:
            route.continue_()

    def reset(self):
        self.requests.clear()
        self.external.clear()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no Chromium installed: install Debian's `chromium` package "
                    "(`bash scripts/install_system_packages.sh` as root, or `apt-get install "
                    "chromium`), or point EFFX_CHROMIUM at a Chromium binary")
    sync_api = pytest.importorskip(
        "playwright.sync_api",
        reason="the Python package `playwright` is not installed: `make install` (it is in "
               "environment.yml's pip list); do not run `playwright install`, Debian's chromium "
               "is used")
    profile = tmp_path_factory.mktemp("chromium_profile")
    with sync_api.sync_playwright() as pw:
        try:
            context = pw.chromium.launch_persistent_context(
                str(profile), executable_path=chromium, headless=True, args=CHROMIUM_FLAGS,
                viewport={"width": 1280, "height": 900}, service_workers="block",
                timeout=60_000)
        except Exception as exc:  # a broken Chromium install is a failure, not a skip
            pytest.fail(f"could not start {chromium} through Playwright: {exc}", pytrace=False)
        try:
            yield Browser(context)
        finally:
            context.close()


class PageLog:
    """Console errors, uncaught exceptions and failed local requests of one page (until it is
    being closed: requests cut short by closing the page are not failures)."""

    def __init__(self, page, browser: Browser):
        self.console_errors: list[str] = []
        self.failed: list[str] = []
        self.closing = False
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self._add(self.console_errors, f"uncaught: {exc}"))
        page.on("requestfailed", lambda r: None if leaves_localhost(r.url)  # blocked on purpose
                else self._add(self.failed, f"{r.url} ({r.failure})"))
        page.on("response", lambda r: self._add(self.failed, f"{r.url} (HTTP {r.status})")
                if r.status >= 400 else None)
        page.on("websocket", lambda ws: browser.external.append(ws.url)
                if leaves_localhost(ws.url) else None)

    def _add(self, where: list, text: str):
        if not self.closing:
            where.append(text)

    def _console(self, message):
        if message.type == "error":
            self._add(self.console_errors, message.text)


def _has_math(html_file: Path) -> bool:
    text = html_file.read_text(encoding="utf-8", errors="replace")
    return bool(re.search(r'class="[^"]*\bmath\b', text))


def _redirect_target(html_file: Path) -> str | None:
    m = re.search(r'http-equiv="refresh"\s+content="\d+;\s*url=([^"]+)"',
                  html_file.read_text(encoding="utf-8", errors="replace"), re.I)
    return m.group(1) if m else None


IMAGES_JS = """() => {
  const seen = new Set();
  const out = [];
  for (const img of document.querySelectorAll('main img, article img, .bd-article img')) {
    if (seen.has(img)) continue;
    seen.add(img);
    const r = img.getBoundingClientRect();
    out.push({src: img.getAttribute('src'), complete: img.complete,
              naturalWidth: img.naturalWidth, naturalHeight: img.naturalHeight,
              width: r.width, height: r.height});
  }
  return out;
}"""


@pytest.mark.parametrize("page_name", PAGES)
def test_page_in_browser(browser, built_book, book_url, page_name):
    html_file = built_book.page_html(page_name)
    if not html_file.exists():
        pytest.fail(f"{html_file.name} was not built")
    browser.reset()
    page = browser.context.new_page()
    log = PageLog(page, browser)
    try:
        url = f"{book_url}/{page_name}.html"
        response = page.goto(url, wait_until="load", timeout=60_000)
        assert response is not None and response.status == 200, (
            f"{url}: HTTP {response.status if response else 'no response'}")
        target = _redirect_target(html_file)
        if target:
            page.wait_for_url(re.compile(re.escape(target) + "$"), timeout=15_000)
            page.wait_for_load_state("load")
            html_file = (html_file.parent / target).resolve()
        math = _has_math(html_file)
        if math and built_book.mathjax_vendored:
            try:  # MathJax typesets after load; a timeout is reported by the assertion below
                page.wait_for_selector("mjx-container", state="attached", timeout=30_000)
            except Exception:
                pass
        page.wait_for_load_state("networkidle", timeout=30_000)

        images = page.evaluate(IMAGES_JS)
        broken = [i for i in images if not (i["complete"] and i["naturalWidth"] > 0
                                             and i["width"] > 0 and i["height"] > 0)]
        math_count = page.locator("mjx-container").count()
        math_errors = page.locator("mjx-merror").count()
        if page_name in SCREENSHOTS:
            shots = Path(os.environ.get("EFFX_SCREENSHOT_DIR",
                                        Path(tempfile.gettempdir()) / "effx-book-screenshots"))
            shots.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shots / f"{SCREENSHOTS[page_name]}.png"), full_page=True)
    finally:
        log.closing = True
        page.close()

    console_errors, failed = log.console_errors, log.failed
    assert not browser.external, (
        f"{page_name}: requests that would leave localhost (blocked):\n"
        + "\n".join(sorted(set(browser.external))))
    assert not failed, f"{page_name}: failed requests:\n" + "\n".join(failed)
    console_errors = [e for e in console_errors
                      if not any(re.search(k, e) for k in KNOWN_CONSOLE_ERRORS)]
    assert not console_errors, f"{page_name}: console errors:\n" + "\n".join(console_errors)
    assert not broken, f"{page_name}: images that did not render: {broken}"
    if math and built_book.mathjax_vendored:
        assert math_count > 0, f"{page_name}: has math but MathJax rendered none"
        assert math_errors == 0, f"{page_name}: {math_errors} MathJax errors"
    assert browser.requests, f"{page_name}: no request was recorded (is routing active?)"


def test_chapter_figures_render(browser, built_book, book_url):
    """Each study chapter that has figures shows them at a readable size."""
    checked = 0
    for name in built_book.notebooks:
        if not built_book.page_html(f"generated/{name}").exists():
            continue
        page = browser.context.new_page()
        try:
            page.goto(f"{book_url}/generated/{name}.html", wait_until="load")
            for img in page.evaluate(IMAGES_JS):
                checked += 1
                assert img["naturalWidth"] >= 200 and img["width"] >= 200, (
                    f"{name}: figure {img['src']} is tiny ({img['naturalWidth']} px, shown "
                    f"{img['width']:.0f} px wide)")
        finally:
            page.close()
    assert checked, "no chapter shows any figure"


def test_math_check_is_not_vacuous(browser, built_book):
    """test_page_in_browser checks that MathJax typesets every page with math: there must be one."""
    if not built_book.mathjax_vendored:
        pytest.skip("MathJax is not in the built book (see test_book.py::test_mathjax_is_vendored)")
    with_math = [p for p in PAGES if built_book.page_html(p).exists()
                 and _has_math(built_book.page_html(p))]
    assert with_math, "no page of the book has math (methods.md should)"
