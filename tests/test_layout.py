"""The package's layout as the README's map describes it: the import layers (import-linter),
the module size limit, and what ``import captum_erasure`` loads."""

import subprocess
import sys
from pathlib import Path

import pytest

import captum_erasure

ROOT = Path(__file__).resolve().parents[1]


def test_import_layers_are_kept():
    """The contracts in pyproject.toml ([tool.importlinter]): _core imports nothing above it,
    methods and metrics only _core, only the benchmark imports LIT."""
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


@pytest.mark.parametrize("folder", ["captum_erasure", "lit_plugin"])
def test_no_module_over_500_lines(folder):
    long = {str(p.relative_to(ROOT)): n for p in (ROOT / folder).rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 500}
    assert not long


def test_import_loads_neither_plots_nor_lit_nor_the_paper():
    code = ("import sys, captum_erasure; "
            "print(sorted(m for m in sys.modules if m.startswith(('lit_nlp', 'lit_plugin', "
            "'captum_erasure.explain.plots', 'captum_erasure.paper', 'captum_erasure.benchmark'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={"HF_HUB_OFFLINE": "1", "PATH": ""}).stdout
    assert out.strip() == "[]"


def test_every_public_name_resolves():
    for name in captum_erasure.__all__:
        assert getattr(captum_erasure, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        captum_erasure.not_a_name  # noqa: B018
