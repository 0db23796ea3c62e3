"""Every install hint in the package names a requirement that pyproject.toml's extra of that
name holds, and no hint asks pip for captum-erasure itself (it is not on PyPI)."""

from __future__ import annotations

import ast
import pathlib
import tomllib

import pytest

from captum_erasure._core.extras import install_hint

ROOT = pathlib.Path(__file__).resolve().parents[2]


def hint_calls():
    for folder in ("captum_erasure", "lit_plugin"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "install_hint":
                    yield path.relative_to(ROOT), [ast.literal_eval(a) for a in node.args]


def test_every_hint_names_a_requirement_of_its_extra():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    calls = list(hint_calls())
    assert {str(path) for path, _ in calls} >= {
        "captum_erasure/models/default.py", "captum_erasure/paper/li2016/glove.py",
        "captum_erasure/scale/corpus_run.py", "lit_plugin/__init__.py"}
    for path, (extra, requirement) in calls:
        assert requirement in extras[extra], (path, extra, requirement)


def test_no_hint_asks_pip_for_this_package():
    for folder in ("captum_erasure", "lit_plugin"):
        for path in (ROOT / folder).rglob("*.py"):
            assert "install 'captum-erasure[" not in path.read_text(), path
            assert "install captum-erasure[" not in path.read_text(), path


def test_the_hint_reads_as_a_command():
    assert install_hint("ray", "ray[data]==2.60.0") == (
        "pip install 'ray[data]==2.60.0' (or, in a checkout of captum-erasure, "
        "pip install -e '.[ray]')")


def test_corpus_runs_on_ray_without_ray_say_how_to_install_it(monkeypatch):
    import sys

    from captum_erasure.scale import corpus_run
    monkeypatch.setitem(sys.modules, "ray", None)  # makes the import fail
    monkeypatch.setitem(sys.modules, "captum_erasure.scale._ray_corpus", None)
    with pytest.raises(ImportError, match=r"backend='ray' needs Ray: pip install "
                                          r"'ray\[data\]==2.60.0'"):
        corpus_run.corpus_tables(["good"], model=("m", "t"), backend="ray")
