"""The LIT UI in a real headless browser: Debian's chromium (installed by ``.ci/setup``) driven by
playwright 1.64.0 against the launcher, started the way the README's command 1 starts it (the
same ``python -m <module>``, here with tiny offline models and ``--port 0``). The page is opened
at exactly the URL the launcher prints, with no query parameters added, and any uncaught page
error or console error fails the test. Screenshots go to ``outputs/test-artifacts/lit_browser/``
(or ``$CAPTUM_ERASURE_TEST_OUTPUT/lit_browser``)."""

from __future__ import annotations

import os
import queue
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit

import pandas as pd
import pytest
from mlm_toys import toy_classifier, toy_mlm, toy_tokenizer

from lit_plugin import HFSequenceClassifier
from lit_plugin.generators import (
    GREEDY_FLIP_NAME,
    INPUT_REDUCTION_NAME,
    MINIMAL_ERASURE_NAME,
    GreedyErasureFlipGenerator,
)
from lit_plugin.interpreters import MARGINALIZATION_NAME, WORD_ERASURE_NAME

REPO = Path(__file__).resolve().parents[2]
TEXTS = ["the film is unbelievable !", "a very dull movie", "not good", "the plot was fun and good"]
SELECTED = "a very dull movie"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-quic"]
STARTUP_SECONDS = 240
# LIT's index.html links four Google Fonts stylesheets (cosmetic: without them the fonts fall
# back and icons render as ligature words). They are answered here with an empty stylesheet so
# that the test never depends on the network (CI may run offline, where each failed link would
# be a console error). Any other request off the loopback server is aborted and fails the test.
FONT_STYLESHEETS = "https://fonts.googleapis.com/css"


def launcher_module() -> str:
    """The module the README's command 1 runs (``.venv/bin/python -m <module>``)."""
    readme = (REPO / "README.md").read_text()
    match = re.search(r"^bash \.ci/setup && \.venv/bin/python -m ([\w.]+)\s", readme, re.M)
    assert match, "README.md: no `bash .ci/setup && .venv/bin/python -m <module>` line"
    return match.group(1)


def chromium_path() -> str:
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not os.path.exists(path):
        pytest.fail("Debian's chromium is not installed: run `bash .ci/setup` (it installs "
                    "chromium and chromium-driver with apt-get)")
    return path


def artifacts_dir() -> Path:
    root = Path(os.environ.get("CAPTUM_ERASURE_TEST_OUTPUT", REPO / "outputs" / "test-artifacts"))
    folder = root / "lit_browser"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("lit_browser")
    tokenizer = toy_tokenizer()
    classifier = toy_classifier()
    classifier.config.id2label = {0: "neg", 1: "neu", 2: "pos"}
    classifier.config.label2id = {"neg": 0, "neu": 1, "pos": 2}
    classifier.save_pretrained(folder / "classifier")
    tokenizer.save_pretrained(folder / "classifier")
    toy_mlm().save_pretrained(folder / "mlm")
    tokenizer.save_pretrained(folder / "mlm")
    pd.DataFrame({"text": TEXTS, "label": ["pos", "neg", "neg", "pos"]}).to_csv(
        folder / "texts.csv", index=False)
    return folder, classifier, tokenizer


@pytest.fixture(scope="module")
def server_url(saved_models):
    """The launcher in a subprocess, as the README's command 1, on a port the OS picks (free by
    construction); the URL is the one it prints, taken verbatim."""
    folder, _, _ = saved_models
    command = [sys.executable, "-m", launcher_module(), "--model", str(folder / "classifier"),
               "--mlm", str(folder / "mlm"), "--data", str(folder / "texts.csv"),
               "--port", "0"]
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    log = open(folder / "server.log", "w")
    process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE,
                               stderr=log, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout],
                     daemon=True).start()
    url = None
    try:
        while url is None:
            line = lines.get(timeout=STARTUP_SECONDS)
            match = re.search(r"(https?://\S+)", line)
            url = match.group(1) if match else None
    except queue.Empty:
        process.kill()
        pytest.fail(f"the launcher printed no URL in {STARTUP_SECONDS} s; log:\n"
                    f"{(folder / 'server.log').read_text()[-3000:]}")
    try:
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def assert_no_errors(page) -> None:
    """No page or console errors; on failure, with the tail of the launcher's log (the server
    side traceback of a failed API call is only there)."""
    assert not page.errors, "\n".join([*page.errors, "launcher log (tail):",
                                        page.server_log.read_text()[-4000:]])


@pytest.fixture(scope="module")
def page(server_url, saved_models):
    """A chromium page that records every uncaught page error, every console message of type
    error (failed loads and HTTP errors of LIT's API calls included) and every request that
    leaves the launcher's server, except LIT's Google Fonts stylesheets (see FONT_STYLESHEETS)."""
    from playwright.sync_api import sync_playwright
    server = urlsplit(server_url).netloc
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path(), headless=True,
                                             args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1600, "height": 1500})
        page.set_default_timeout(60_000)
        errors: list[str] = []

        def route(request_route):
            url = request_route.request.url
            if url.startswith(FONT_STYLESHEETS):
                request_route.fulfill(status=200, content_type="text/css", body="")
            elif urlsplit(url).netloc == server or url.startswith(("data:", "blob:")):
                request_route.continue_()
            else:
                errors.append(f"request off the server: {url}")
                request_route.abort()

        page.route("**/*", route)
        page.on("pageerror", lambda error: errors.append(f"page error: {error}"))
        page.on("console", lambda message: errors.append(
            f"console error: {message.text} ({message.location.get('url')})")
            if message.type == "error" else None)
        page.errors = errors
        page.server_log = saved_models[0] / "server.log"
        try:
            yield page
        finally:
            browser.close()


def test_the_launcher_binds_loopback_and_serves_the_page(server_url):
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", server_url), server_url
    import urllib.request
    with urllib.request.urlopen(server_url, timeout=30) as response:
        assert response.status == 200
        assert "<lit-app" in response.read().decode()


def test_the_printed_url_renders_the_data_table_and_both_tabs(page, server_url):
    page.goto(server_url, wait_until="networkidle")
    assert_no_errors(page)  # LIT 1.3.1 without a default layout: "Cannot read
    # properties of undefined (reading 'upper')" and a blank page
    table = page.locator("lit-data-table")
    table.first.wait_for()
    for text in TEXTS:
        table.first.get_by_text(text, exact=True).first.wait_for()
    for tab in ["Explanations", "Counterfactuals"]:  # lower tabs, visible
        page.get_by_text(tab, exact=True).first.wait_for()
    page.screenshot(path=str(artifacts_dir() / "landing.png"), full_page=True)
    assert_no_errors(page)


def test_salience_maps_show_our_rows_with_token_chips(page):
    assert_no_errors(page)  # fail fast (not by timeouts) after a broken page
    page.get_by_text(SELECTED, exact=True).first.click()
    page.get_by_text("Explanations", exact=True).first.click()
    module = page.locator("salience-map-module")
    module.wait_for()
    for name in [WORD_ERASURE_NAME, MARGINALIZATION_NAME, "Integrated Gradients", "LIME"]:
        assert module.locator(".expansion-label", has_text=name).count() == 1, name
    # word erasure runs on selection (autorun): one chip per word of the selected text
    erasure_row = module.locator("expansion-panel", has_text=WORD_ERASURE_NAME)
    chips = erasure_row.locator(".salient-token")
    chips.first.wait_for()
    assert chips.all_inner_texts() == SELECTED.split()
    # marginalization runs when its row is opened
    marginalization_row = module.locator("expansion-panel", has_text=MARGINALIZATION_NAME)
    marginalization_row.locator(".expansion-label").click()
    marginalization_row.locator(".salient-token").first.wait_for()
    assert marginalization_row.locator(".salient-token").all_inner_texts() == SELECTED.split()
    marginalization_row.scroll_into_view_if_needed()
    page.screenshot(path=str(artifacts_dir() / "explanations.png"), full_page=True)
    assert_no_errors(page)


def test_counterfactuals_tab_offers_and_runs_our_generators(page, saved_models):
    _, classifier, tokenizer = saved_models
    assert_no_errors(page)
    page.get_by_text("Counterfactuals", exact=True).first.click()
    module = page.locator("generator-module")
    module.wait_for()
    for name in [MINIMAL_ERASURE_NAME, GREEDY_FLIP_NAME, INPUT_REDUCTION_NAME, "Ablation Flip"]:
        assert module.locator(".expansion-label", has_text=name).count() == 1, name
    # what the greedy flip must produce for the selected example
    model = HFSequenceClassifier(classifier, tokenizer)
    (expected,) = GreedyErasureFlipGenerator().generate({"text": SELECTED}, model, None)
    module.locator(".expansion-label", has_text=GREEDY_FLIP_NAME).click()
    module.locator("button:visible", has_text="Apply").click()
    module.get_by_text("generated 1 counterfactual").wait_for()
    assert module.get_by_text(expected["text"], exact=True).count() >= 1
    page.screenshot(path=str(artifacts_dir() / "counterfactuals.png"), full_page=True)
    assert_no_errors(page)
