"""Every ```python block of README.md and docs/*.md runs as written.

Each block is executed in a fresh namespace, in a temporary working directory, offline
(``HF_HUB_OFFLINE=1``), with one torch thread, so a renamed argument or a name the docs use but
never define fails the suite. Blocks that cannot run here are fenced ```python no-run and start
with a ``# not run: <why>`` line; they are still compiled, their ``from captum_erasure... import``
names must exist, and they are counted (printed in the summary of ``-rA``/``-s`` runs).

The blocks use the offline default model (``load_default_model()``): it is built on first use
(about 5 minutes on 2 CPU cores), then loaded from the cache in seconds.
"""

from __future__ import annotations

import ast
import importlib
import re
from dataclasses import dataclass
from pathlib import Path

import matplotlib
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^```(?P<info>[^\n`]*)\n(?P<code>.*?)^```[ \t]*$", re.M | re.S)
NO_RUN_REASON = "# not run:"


@dataclass(frozen=True)
class Snippet:
    path: str      # relative to the repository root
    line: int      # line of the opening fence
    code: str
    run: bool

    @property
    def name(self) -> str:
        return f"{self.path}:{self.line}"


def python_snippets(text: str, path: str = "<text>") -> list[Snippet]:
    """The ```python blocks of a Markdown text; ``python no-run`` blocks have ``run=False``."""
    found = []
    for match in FENCE.finditer(text):
        words = match["info"].split()
        if not words or words[0] != "python":
            continue
        line = text.count("\n", 0, match.start()) + 1
        found.append(Snippet(path, line, match["code"], run="no-run" not in words[1:]))
    return found


def documented_snippets() -> list[Snippet]:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    return [s for f in files for s in python_snippets(f.read_text(), str(f.relative_to(ROOT)))]


SNIPPETS = documented_snippets()
RUNNABLE = [s for s in SNIPPETS if s.run]
NOT_RUN = [s for s in SNIPPETS if not s.run]


def test_the_extractor_finds_blocks_and_their_marks():
    text = ("# t\n```python\na = 1\n```\ntext\n```bash\nls\n```\n"
            "```python no-run\n# not run: needs a GPU\nb = 2\n```\n```py\nc\n```\n")
    blocks = python_snippets(text, "t.md")
    assert [(b.line, b.code, b.run) for b in blocks] == [
        (2, "a = 1\n", True), (9, "# not run: needs a GPU\nb = 2\n", False)]


def test_the_docs_have_runnable_snippets_and_the_readme_a_quickstart():
    readme = [s for s in RUNNABLE if s.path == "README.md"]
    assert readme, "README.md has no runnable ```python block"
    assert "load_default_model" in readme[0].code
    assert len(readme[0].code.strip().splitlines()) <= 15, "the quickstart is over 15 lines"
    assert len(RUNNABLE) >= 10


@pytest.mark.parametrize("snippet", NOT_RUN, ids=lambda s: s.name)
def test_not_run_snippets_say_why_compile_and_import_real_names(snippet):
    assert snippet.code.startswith(NO_RUN_REASON), (
        f"{snippet.name}: a ```python no-run block must start with '{NO_RUN_REASON} <why>'")
    tree = ast.parse(snippet.code, snippet.name)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(
                ("captum_erasure", "lit_plugin")):
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), f"{snippet.name}: {node.module}.{alias.name}"


def test_count_of_snippets_not_run(capsys):
    """Counted, so that a growing number of unchecked blocks shows in the test output."""
    with capsys.disabled():
        print(f"\ndocs snippets: {len(RUNNABLE)} run, {len(NOT_RUN)} marked no-run: "
              + ", ".join(s.name for s in NOT_RUN))
    assert len(RUNNABLE) + len(NOT_RUN) == len(SNIPPETS)


@pytest.fixture(scope="module")
def default_model_built():
    """Builds the offline default model once if it is not cached yet (the snippets load it)."""
    from captum_erasure import load_default_model
    load_default_model()


@pytest.mark.slow
@pytest.mark.parametrize("snippet", RUNNABLE, ids=lambda s: s.name)
def test_snippet_runs_as_written(snippet, default_model_built, tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    matplotlib.use("Agg")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    namespace = {"__name__": "__main__"}
    try:
        exec(compile(snippet.code, snippet.name, "exec"), namespace)  # noqa: S102
    finally:
        torch.set_num_threads(threads)
        plt.close("all")
