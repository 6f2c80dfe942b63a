"""Book smoke test: every notebook executed at the tiny profile, the HTML built with
--warningiserror, and the built pages checked (every page present, every study's figures in its
page, glue resolved, nothing loaded from outside the book). Also: bad parameters fail fast with
one clear message.

The build itself is the session fixture ``built_book`` (tests/conftest.py), shared with
tests/test_book_browser.py.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from conftest import BOOK_DIR, REPO_ROOT, effx_subprocess_env, mathjax_path, toc_pages
from effx.pipeline import notebooks

NOTEBOOKS = notebooks()
PAGES = toc_pages(BOOK_DIR)

#: notebooks that show tables only, by design (each with the reason); every other notebook must
#: put at least one figure into its chapter
FIGURELESS = {
    "reproducibility": "machine, versions and execution times of the build: tables only",
}

LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "[::1]"}
#: <link rel=...> values that name a document without the browser loading it
NOT_LOADED_RELS = {"canonical", "alternate", "author", "license", "help", "bookmark"}
#: the ways a page makes the browser fetch something: tag -> attributes holding URLs
RESOURCE_ATTRS = {
    "script": ("src",), "link": ("href",), "img": ("src", "srcset"), "source": ("src", "srcset"),
    "iframe": ("src",), "embed": ("src",), "object": ("data",), "video": ("src", "poster"),
    "audio": ("src",), "track": ("src",), "input": ("src",), "image": ("href", "xlink:href"),
    "use": ("href", "xlink:href"),
}
CSS_URL = re.compile(r"""url\(\s*['"]?([^'")\s]+)|@import\s+['"]([^'"]+)['"]""")


def is_external(url: str) -> bool:
    """True when loading `url` would leave this machine (any host but localhost)."""
    url = url.strip()
    if url.startswith("//"):
        url = "http:" + url
    parts = urlsplit(url)
    if parts.scheme in ("", "data", "blob", "about", "javascript", "mailto"):
        return False
    if parts.scheme == "file":
        return False
    return (parts.hostname or "") not in LOCAL_HOSTS


def html_files(html_root: Path) -> list[Path]:
    """The book's pages (not the theme's template fragments under _static, not _sources)."""
    return sorted(p for p in html_root.rglob("*.html")
                  if p.relative_to(html_root).parts[0] not in ("_static", "_sources"))


class _Resources(HTMLParser):
    """Collects (tag, attribute, url) of every resource a page loads, and <img> sources."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.resources: list[tuple[str, str, str]] = []
        self.images: list[str] = []
        self._in_style = False

    def handle_starttag(self, tag, attrs):
        attrs = {k: (v or "") for k, v in attrs}
        if tag == "style":
            self._in_style = True
        if tag == "img" and attrs.get("src"):
            self.images.append(attrs["src"])
        if "style" in attrs:
            self._css(tag, attrs["style"])
        if tag == "link" and set(attrs.get("rel", "").lower().split()) & NOT_LOADED_RELS:
            return
        for attr in RESOURCE_ATTRS.get(tag, ()):
            value = attrs.get(attr)
            if not value:
                continue
            urls = [c.strip().split()[0] for c in value.split(",") if c.strip()] \
                if attr == "srcset" else [value]
            self.resources.extend((tag, attr, u) for u in urls)

    def handle_endtag(self, tag):
        if tag == "style":
            self._in_style = False

    def handle_data(self, data):
        if self._in_style:
            self._css("style", data)

    def _css(self, tag, css):
        for m in CSS_URL.finditer(css):
            self.resources.append((tag, "css url", m.group(1) or m.group(2)))


def parse(path: Path) -> _Resources:
    parser = _Resources()
    parser.feed(path.read_text(encoding="utf-8", errors="replace"))
    return parser


def _warnings(log: str) -> str:
    return "\n".join(line for line in log.splitlines()
                     if re.search(r"\b(WARNING|ERROR|CRITICAL)\b|Traceback|Exception", line))


# ---------------------------------------------------------------------------------------------
# the build

def test_mathjax_is_vendored(built_book):
    where = f"_static/{mathjax_path(BOOK_DIR)}"
    assert built_book.mathjax_vendored, (
        f"the built book has no {where}: the book serves MathJax itself (no CDN) and `make test` "
        "/ `make book` install it from the npm registry before building (`npm ci`, then "
        "node_modules/mathjax/es5 copied into book/_vendor/_static/, see the Makefile's MATHJAX "
        "target). Run `make test` rather than bare pytest, or `make book/_vendor/_static/mathjax/tex-chtml.js` first")
    assert not is_external(mathjax_path(BOOK_DIR)), "mathjax_path points outside the book"


def test_build_succeeds(built_book):
    assert built_book.build_returncode == 0, (
        f"jupyter-book build --warningiserror --keep-going failed "
        f"(exit {built_book.build_returncode}). Warnings and errors:\n"
        f"{_warnings(built_book.build_log) or '(none found)'}\n--- log tail ---\n"
        + "\n".join(built_book.build_log.splitlines()[-40:]))
    assert (built_book.html / "index.html").exists(), "no index.html in the built book"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_is_in_the_toc(name):
    assert f"generated/{name}" in PAGES, (
        f"notebooks/{name}.ipynb is executed by the pipeline but book/_toc.yml has no "
        f"`- file: generated/{name}` entry, so the book leaves it out (only_build_toc_files)")


@pytest.mark.parametrize("page", PAGES)
def test_toc_page_has_html(built_book, page):
    path = built_book.page_html(page)
    assert path.exists(), f"_toc.yml lists '{page}' but the build has no {path.name}"
    assert "<main" in path.read_text(encoding="utf-8"), f"{path} has no <main> content"


def _png_outputs(executed: Path) -> int:
    """Figures (image/png outputs) of an executed notebook that the book is meant to show."""
    nb = json.loads(executed.read_text())
    count = 0
    for cell in nb.get("cells", []):
        tags = set(cell.get("metadata", {}).get("tags", []))
        if cell.get("cell_type") != "code" or tags & {"remove-output", "remove-cell"}:
            continue
        count += sum("image/png" in out.get("data", {}) for out in cell.get("outputs", []))
    return count


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_figures_reach_the_html(built_book, name):
    page = built_book.page_html(f"generated/{name}")
    if not page.exists():
        pytest.fail(f"no HTML page for notebook '{name}' ({page.name}); see the toc/build tests")
    pngs = []
    for src in parse(page).images:
        if src.lower().split("?")[0].endswith(".png") and not is_external(src):
            file = (page.parent / src.split("?")[0]).resolve()
            assert file.exists(), f"{page.name}: <img src={src!r}> points to a missing file"
            assert file.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{file} is not a PNG"
            pngs.append(src)
    made = _png_outputs(built_book.generated / f"{name}.ipynb")
    assert len(pngs) >= made, (
        f"notebook '{name}' made {made} figure(s) but its page shows only {len(pngs)}")
    if name in FIGURELESS:
        return
    assert pngs, (f"notebook '{name}' produced no figure (no PNG <img> in {page.name}, "
                  f"{made} image/png outputs in the executed notebook)")


def test_glue_is_resolved(built_book):
    log_glue = [line for line in built_book.build_log.splitlines()
                if "glue" in line.lower() and re.search(r"WARNING|ERROR", line)]
    assert not log_glue, "glue warnings in the build log:\n" + "\n".join(log_glue)
    intro = built_book.page_html(PAGES[0])
    assert intro.exists(), f"no {intro.name}"
    for page in [intro, *html_files(built_book.html)]:
        text = page.read_text(encoding="utf-8")
        leftover = re.findall(r"\{glue(?::\w+)?\}`?[^`<]*`?|glue:(?:text|any|figure|math|md)\b",
                              text)
        assert not leftover, f"{page.name}: unresolved glue roles left in the page: {leftover[:5]}"
        pasted = re.findall(r'<span class="pasted-text">(.*?)</span>', text, flags=re.S)
        bad = [v for v in pasted if not v.strip() or v.strip().lower() in ("nan", "inf", "-inf")]
        assert not bad, f"{page.name}: glued values that are empty or not numbers: {bad}"
    assert "pasted-text" in intro.read_text(encoding="utf-8") or \
        "{glue" not in (BOOK_DIR / "intro.md").read_text(), \
        f"{intro.name}: intro.md glues numbers but none were pasted into the page"


def test_no_external_resources(built_book):
    pages = html_files(built_book.html)
    assert pages, "no HTML pages were built"
    external = []
    for page in pages:
        for tag, attr, url in parse(page).resources:
            if is_external(url):
                external.append(f"{page.relative_to(built_book.html)}: <{tag} {attr}> {url}")
    static = built_book.html / "_static"
    for css in sorted(static.rglob("*.css")) if static.exists() else []:
        for m in CSS_URL.finditer(css.read_text(encoding="utf-8", errors="replace")):
            url = m.group(1) or m.group(2)
            if is_external(url):
                external.append(f"{css.relative_to(built_book.html)}: css {url}")
    assert not external, ("the book would load resources from outside localhost (it must "
                          "serve everything itself):\n" + "\n".join(sorted(set(external))))


def test_is_external():
    assert not is_external("_static/x.js") and not is_external("../_images/a.png")
    assert not is_external("http://127.0.0.1:8000/a.css") and not is_external("data:image/png;x")
    assert is_external("https://cdn.jsdelivr.net/x.js") and is_external("//unpkg.com/x")


# ---------------------------------------------------------------------------------------------
# bad parameters: non-zero exit, one message naming the parameter

BAD_RUNS = {
    "lengths": ["--only", "attention_scaling", "-p", "lengths", "[0, 5]"],
    "device": ["--only", "attention_scaling", "-p", "device", "cuda"],
    "NB": ["--only", "no_such_notebook"],
}


@pytest.fixture(scope="module")
def bad_runs(tmp_path_factory):
    """The bad-parameter pipeline runs, concurrently (each imports torch: seconds)."""
    base = tmp_path_factory.mktemp("bad_params")
    env = effx_subprocess_env(base / "results")

    def run(args):
        cmd = [sys.executable, "-m", "effx.pipeline", "run", "--profile", "tiny",
               "--out", str(base / "out"), *args]
        return subprocess.run(cmd, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                              timeout=300)

    with ThreadPoolExecutor(len(BAD_RUNS)) as pool:
        futures = {k: pool.submit(run, v) for k, v in BAD_RUNS.items()}
        results = {k: f.result() for k, f in futures.items()}
    assert not list((base / "out").glob("*.ipynb")), "a rejected run executed a notebook"
    return results


def _check_rejected(proc, name):
    assert proc.returncode != 0, f"bad '{name}' was accepted:\n{proc.stdout}\n{proc.stderr}"
    assert f"'{name}'" in proc.stderr, f"stderr does not name '{name}':\n{proc.stderr}"
    assert "Traceback" not in proc.stderr, f"a traceback instead of a message:\n{proc.stderr}"


def test_bad_length_is_rejected(bad_runs):
    _check_rejected(bad_runs["lengths"], "lengths")


def test_cuda_without_gpu_is_rejected(bad_runs):
    from effx.device import cuda_available
    if cuda_available():
        pytest.skip("this machine has CUDA: `-p device cuda` is valid here")
    proc = bad_runs["device"]
    _check_rejected(proc, "device")
    assert re.search(r"CUDA.*(not available|no CUDA|unavailable)|no CUDA", proc.stderr,
                     re.I), f"stderr does not say CUDA is not available:\n{proc.stderr}"


def test_unknown_notebook_is_rejected(bad_runs):
    proc = bad_runs["NB"]
    _check_rejected(proc, "NB")
    missing = [n for n in NOTEBOOKS if n not in proc.stderr]
    assert not missing, f"stderr does not list the allowed notebooks {missing}:\n{proc.stderr}"


def test_make_notebook_requires_nb():
    make = shutil.which("make")
    if not make:
        pytest.skip("GNU make is not installed")
    env = effx_subprocess_env()
    for var in ("NB", "PARAMS", "MAKEFLAGS", "MFLAGS", "MAKELEVEL"):
        env.pop(var, None)
    proc = subprocess.run([make, "-s", "notebook"], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=900)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0, f"`make notebook` without NB succeeded:\n{out}"
    assert "'NB'" in out, f"`make notebook` without NB does not name NB:\n{out}"
    missing = [n for n in NOTEBOOKS if n not in out]
    assert not missing, f"`make notebook` does not list the allowed notebooks {missing}:\n{out}"


def test_mathjax_is_loaded_once(built_book):
    """Only the mathjax_path script: jupyter-book adds every .js under an html_static_path folder
    to every page, which would load all ~70 files of the MathJax distribution (and its
    `latest.js`, which requests a URL that does not exist)."""
    entry = mathjax_path(BOOK_DIR)
    problems = []
    for page in html_files(built_book.html):
        scripts = [u.split("?")[0] for tag, _, u in parse(page).resources
                   if tag == "script" and "mathjax/" in u]
        extra = sorted({s for s in scripts if not s.endswith(entry)})
        if extra:
            problems.append(f"{page.relative_to(built_book.html)}: {len(extra)} extra MathJax "
                            f"scripts, e.g. {extra[:3]}")
    assert not problems, (
        "pages load MathJax files besides the entry script "
        f"'{entry}' (jupyter-book adds every .js in html_static_path to every page; keep "
        "MathJax out of the scanned static folders, e.g. in a folder listed in "
        "html_extra_path):\n" + "\n".join(problems))
