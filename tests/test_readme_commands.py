"""The command lines of README.md and docs/*.md: the README's two commands stay exactly the
lines CI runs, every ``python -m <module>`` and ``python examples/<script>.py`` they name
exists and defines the flags written after it, the README's commands answer ``--help``, and
every relative link resolves. (The commands themselves are not run here: they take minutes to
hours.)"""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
COMMANDS = ["bash .ci/setup && .venv/bin/python -m lit_plugin",
            "bash .ci/setup && HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -q"]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# a command named in the docs: its target (module or script) and the rest of its line
COMMAND = re.compile(r"python (-m [A-Za-z_][\w.]*|examples/\w+\.py)([^`#|\n]*)")
EXTERNAL = {"-m pytest", "-m pip"}


def bash_lines(text: str) -> list[str]:
    """The lines of the ```bash blocks, without trailing comments."""
    blocks = re.findall(r"^```bash\n(.*?)^```", text, re.M | re.S)
    return [line.split("  #")[0].rstrip() for block in blocks for line in block.splitlines()]


def named_commands() -> dict[str, set[str]]:
    """target -> the flags written after it anywhere in the README and the docs."""
    found: dict[str, set[str]] = {}
    for path in DOCS:
        for target, rest in COMMAND.findall(path.read_text()):
            if target not in EXTERNAL:
                found.setdefault(target, set()).update(re.findall(r"(?<!\S)(--[\w-]+)", rest))
    return found


NAMED = named_commands()


def test_the_readme_has_the_two_commands_verbatim_and_in_order():
    lines = bash_lines((ROOT / "README.md").read_text())
    positions = [lines.index(command) for command in COMMANDS]  # ValueError if one is missing
    assert positions == sorted(positions)


def test_ci_runs_the_readme_test_command_verbatim():
    assert COMMANDS[1] in (ROOT / ".ci" / "run").read_text().splitlines()


def test_the_docs_name_commands():
    assert {"-m lit_plugin", "-m captum_erasure.demo", "-m captum_erasure.benchmark"} <= set(NAMED)


def source_of(target: str) -> str:
    """The text of the script, or of the module (every file of a package)."""
    if target.startswith("examples/"):
        assert (ROOT / target).is_file(), f"{target} does not exist"
        return (ROOT / target).read_text()
    spec = importlib.util.find_spec(target.split()[1])
    assert spec is not None and spec.origin, f"no module {target.split()[1]}"
    origin = Path(spec.origin)
    files = origin.parent.rglob("*.py") if origin.name == "__init__.py" else [origin]
    return "\n".join(f.read_text() for f in files)


@pytest.mark.parametrize("target", sorted(NAMED))
def test_named_command_exists_and_defines_its_flags(target):
    source = source_of(target)
    unknown = {flag for flag in NAMED[target] if f'"{flag}"' not in source}
    assert not unknown, f"{target} defines no {sorted(unknown)}"


README_TARGETS = sorted({t for t, _ in COMMAND.findall((ROOT / "README.md").read_text())}
                        - EXTERNAL)


@pytest.mark.parametrize("target", README_TARGETS)
def test_readme_command_answers_help(target):
    argv = [sys.executable, *target.split(), "--help"]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1",
                               "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage:" in done.stdout


def heading_anchors(text: str) -> set[str]:
    """GitHub's anchors of a Markdown file's headings (lower case, punctuation dropped)."""
    headings = re.findall(r"^#+ (.+)$", re.sub(r"^```.*?^```", "", text, flags=re.M | re.S),
                          re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("path", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(path):
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text()):
        if re.match(r"[a-z]+:", target):
            continue  # http(s), mailto
        file, _, anchor = target.partition("#")
        linked = (path.parent / file) if file else path
        if not linked.exists():
            broken.append(target)
        elif anchor and linked.suffix == ".md" and anchor not in heading_anchors(
                linked.read_text()):
            broken.append(target)
    assert not broken, broken
