"""The snippets of docs/words_and_targets.md run as written and print what the page shows
(on the offline default model; skipped where it has not been built)."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import pytest

from captum_erasure.models.default import default_model_dir

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "words_and_targets.md"
PAIRS = re.findall(r"```python\n(.*?)```\n\n```text\n(.*?)```", PAGE.read_text(), re.S)


def test_the_page_has_its_snippets():
    assert len(PAIRS) == 4


@pytest.mark.skipif(not (default_model_dir() / "info.json").is_file(),
                    reason="the default model is built by load_default_model() (minutes)")
@pytest.mark.parametrize("code, printed", PAIRS, ids=[f"snippet{i}" for i in range(len(PAIRS))])
def test_snippet_prints_what_the_page_says(code, printed):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout == printed
