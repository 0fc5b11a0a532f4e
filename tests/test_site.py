"""The documentation site: it builds with warnings as errors, its API reference is generated from the package
(a public object without a docstring fails the build), and a real browser shows every public loss on the API
page without an error.

The site is built once per test session (one build shared by xdist workers, behind a file lock). The browser
test needs Chromium (Debian's ``chromium``); without it the test skips, unless ``RECLOSS_REQUIRE_BROWSER=1``
(set by ``.ci/run``), which makes a missing browser a failure. The screenshot of the API page is written to
``$RECLOSS_TEST_ARTIFACTS`` (default: the test's temporary folder).
"""

from __future__ import annotations

import http.server
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import recloss
from recloss.losses import CATALOGUE, METRICS

ROOT = Path(__file__).resolve().parents[1]
BROWSER_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

pytestmark = pytest.mark.skipif(importlib.util.find_spec("mkdocs") is None
                                or importlib.util.find_spec("mkdocstrings_handlers") is None,
                                reason='needs the docs extra: pip install -e ".[docs]"')


def _build(site: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "NO_MKDOCS_2_WARNING": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                          cwd=ROOT, capture_output=True, text=True, env=env, timeout=900)


@pytest.fixture(scope="session")
def built_site(tmp_path_factory) -> Path:
    """The site built with ``mkdocs build --strict``, once for all xdist workers (a file lock in the
    session's shared temporary folder); the build's log is in ``build.log`` beside it."""
    from filelock import FileLock

    # Under xdist each worker's temporary folder sits in the session's; without it, the session's folder is
    # the test's own (its parent is shared by every session: a build found there would be stale).
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    site, log = shared / "recloss-site", shared / "recloss-site.json"
    with FileLock(str(log) + ".lock"):
        if not log.exists():
            done = _build(site)
            log.write_text(json.dumps({"returncode": done.returncode, "output": done.stdout + done.stderr}))
    result = json.loads(log.read_text())
    assert result["returncode"] == 0, "mkdocs build --strict failed:\n" + result["output"][-6000:]
    return site


def test_the_site_builds_strictly_with_a_page_per_api_part(built_site):
    pages = {p.relative_to(built_site).as_posix() for p in built_site.rglob("index.html")}
    for page in ("api/losses/index.html", "api/metrics/index.html", "api/torch/index.html",
                 "api/keras/index.html", "api/validation/index.html", "api/errors/index.html",
                 "migrating/tfrs/index.html", "examples/movielens/index.html", "changelog/index.html"):
        assert page in pages, page
    losses = (built_site / "api/losses/index.html").read_text()
    for name in CATALOGUE:   # each loss has its own entry (an anchor mkdocstrings makes from the object path)
        assert f'id="recloss.{name}"' in losses, name
    metrics = (built_site / "api/metrics/index.html").read_text()
    assert all(f'id="recloss.metrics.{name}"' in metrics for name in METRICS)
    changelog = (built_site / "changelog/index.html").read_text()
    assert "Keep a Changelog" in changelog and "0.1.0" in changelog


def _hook():
    spec = importlib.util.spec_from_file_location("api_reference", ROOT / "docs" / "hooks" / "api_reference.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module          # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_the_reference_follows_the_catalogue_and_flags_what_is_undocumented(monkeypatch, caplog):
    """A loss added to the catalogue (and to the package) gets an entry without a page being written; an
    object without a docstring, or a loss whose docstring omits a parameter, is a warning (a failure under
    ``--strict``)."""
    from toy_ranking_spec import TOY_SPEC
    from recloss._api import build

    hook = _hook()
    function = build(TOY_SPEC)
    monkeypatch.setitem(CATALOGUE, TOY_SPEC.name, TOY_SPEC)
    monkeypatch.setattr(recloss, TOY_SPEC.name, function, raising=False)
    monkeypatch.setattr(recloss, "__all__", [*recloss.__all__, TOY_SPEC.name])
    pages = {page.path: page for page in hook.build_pages()}
    assert f"::: recloss.{TOY_SPEC.name}" in pages["api/losses.md"].markdown()
    assert f"[`{TOY_SPEC.name}`][recloss.{TOY_SPEC.name}]" in pages["api/losses.md"].markdown()

    caplog.set_level("WARNING", logger="mkdocs.hooks.api_reference")
    hook.check(list(pages.values()))
    assert not caplog.records, [r.getMessage() for r in caplog.records]

    function.__doc__ = function.__doc__.replace("    mask:", "    not_the_mask:")
    hook.check(list(pages.values()))
    assert [r.getMessage() for r in caplog.records] == [
        f"recloss.{TOY_SPEC.name}: its docstring does not describe the parameters ['mask']"]
    caplog.clear()
    function.__doc__ = None
    hook.check(list(pages.values()))
    assert [r.getMessage() for r in caplog.records] == [
        f"recloss.{TOY_SPEC.name} has no docstring: the API reference would show nothing for it"]


class _RecordingHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the site and records (path, status) of every request, to find what the browser failed to load."""

    requests: list[tuple[str, int]] = []

    def log_request(self, code="-", size="-"):
        type(self).requests.append((self.path, int(code) if str(code).isdigit() else 0))

    def log_message(self, *args):
        pass


def _browser() -> str | None:
    return next((path for name in ("chromium", "chromium-browser", "google-chrome")
                 if (path := shutil.which(name))), None)


def test_browser_shows_every_public_loss_on_the_api_page(built_site, tmp_path):
    browser = _browser()
    if browser is None:
        if os.environ.get("RECLOSS_REQUIRE_BROWSER") == "1":
            pytest.fail("RECLOSS_REQUIRE_BROWSER=1 but no Chromium on PATH (Debian: apt-get install chromium)")
        pytest.skip("no Chromium on PATH (Debian: apt-get install chromium); RECLOSS_REQUIRE_BROWSER=1 makes "
                    "this a failure")
    handler = type("Handler", (_RecordingHandler,), {"requests": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             lambda *a, **k: handler(*a, directory=str(built_site), **k))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    artifacts = Path(os.environ.get("RECLOSS_TEST_ARTIFACTS") or tmp_path)
    artifacts.mkdir(parents=True, exist_ok=True)
    screenshot = artifacts / "api-losses.png"
    url = f"http://127.0.0.1:{server.server_address[1]}/api/losses/"
    common = [browser, *BROWSER_FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr",
              "--v=0", "--virtual-time-budget=10000", "--window-size=1400,2400"]
    try:
        dom = subprocess.run([*common, "--dump-dom", url], capture_output=True, text=True, timeout=180)
        shot = subprocess.run([*common, f"--screenshot={screenshot}", url], capture_output=True, text=True,
                              timeout=180)
    finally:
        server.shutdown()
        server.server_close()
    assert dom.returncode == 0 and shot.returncode == 0, dom.stderr[-3000:] + shot.stderr[-3000:]
    assert screenshot.stat().st_size > 20_000, "the screenshot is (nearly) empty"

    html = dom.stdout
    text = re.sub(r"<[^>]+>", " ", html)
    assert "<title>Losses - recloss</title>" in html
    for name in recloss.__all__:
        if name in CATALOGUE:
            assert f'id="recloss.{name}"' in html and f"recloss.{name}" in text, name
    failed = [(path, status) for path, status in handler.requests if status >= 400]
    assert not failed, f"the browser could not load {failed}"
    assert any(path.endswith(".js") for path, _ in handler.requests), "the page's scripts were not requested"
    console = [line for line in dom.stderr.splitlines() + shot.stderr.splitlines() if ":CONSOLE" in line]
    assert not console, f"the page logged to the console: {console}"
    assert not re.search(r"Traceback|Could not collect|ERROR", text), "the page shows an error"
    print(f"screenshot of the API page: {screenshot}")
