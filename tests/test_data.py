"""Tests for captum_erasure.data (uses the cached vaderSentiment sdist; downloads it once)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from captum_erasure import data


def test_cache_dir_honours_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    target = tmp_path / "nested" / "cache"
    monkeypatch.setenv("CAPTUM_ERASURE_CACHE", str(target))
    assert data.cache_dir() == target
    assert target.is_dir()


def test_cache_dir_falls_back_to_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CAPTUM_ERASURE_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert data.cache_dir() == tmp_path / "captum-erasure"


def test_cache_dir_falls_back_to_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("CAPTUM_ERASURE_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert data.cache_dir() == tmp_path / ".cache" / "captum-erasure"


def test_movie_snippets() -> None:
    movie = data.load_snippets("movie")
    assert list(movie.columns) == ["id", "rating", "text"]
    assert len(movie) == 10_605
    assert movie["id"].is_unique
    assert movie["rating"].between(-4, 4).all()
    assert not movie["text"].str.contains("\r").any()
    row = movie[movie["text"] == "Effective but too tepid biopic"]
    assert row["id"].tolist() == [3]
    assert row["rating"].tolist() == [pytest.approx(-0.6)]


@pytest.mark.parametrize("corpus, rows", [("amazon", 3708), ("nyt", 5190), ("tweets", 4200)])
def test_other_corpora(corpus: str, rows: int) -> None:
    frame = data.load_snippets(corpus)
    assert len(frame) == rows
    assert frame["rating"].between(-4, 4).all()
    assert (frame["text"].str.len() > 0).all()


def test_unknown_corpus() -> None:
    with pytest.raises(ValueError, match="movie"):
        data.load_snippets("imdb")


def test_load_snippets_returns_a_copy() -> None:
    first = data.load_snippets("movie")
    first.loc[0, "text"] = "changed"
    assert data.load_snippets("movie").loc[0, "text"] != "changed"


def test_rotten_tomatoes_splits_partition_all() -> None:
    everything = data.load_rotten_tomatoes("all")
    parts = {split: data.load_rotten_tomatoes(split) for split in ("train", "dev", "test")}
    ids = [set(part["id"]) for part in parts.values()]
    assert not (ids[0] & ids[1] or ids[0] & ids[2] or ids[1] & ids[2])
    assert set().union(*ids) == set(everything["id"])
    assert sum(len(part) for part in parts.values()) == len(everything)
    assert (parts["test"]["id"] % 10 == 0).all()
    assert (parts["dev"]["id"] % 10 == 1).all()
    assert (parts["train"]["id"] % 10 >= 2).all()
    # Roughly 80/10/10.
    assert 0.75 < len(parts["train"]) / len(everything) < 0.85


def test_rotten_tomatoes_labels_and_margin() -> None:
    frame = data.load_rotten_tomatoes("all")
    assert list(frame.columns) == ["id", "text", "rating", "label"]
    assert ((frame["rating"] > 0) == (frame["label"] == 1)).all()
    assert set(frame["label"]) == {0, 1}
    assert (frame["rating"].abs() >= 0.5).all()
    assert (frame["text"].str.len() > 0).all()
    movie = data.load_snippets("movie")
    dropped = (movie["rating"].abs() < 0.5).sum()
    assert len(frame) == len(movie) - dropped
    assert 0.03 < dropped / len(movie) < 0.07  # "about 5%" as documented
    # The tepid biopic (-0.6) survives the default margin as a negative.
    assert frame.loc[frame["id"] == 3, "label"].tolist() == [0]


def test_rotten_tomatoes_custom_margin() -> None:
    strict = data.load_rotten_tomatoes("all", neutral_margin=1.0)
    assert (strict["rating"].abs() >= 1.0).all()
    assert len(strict) < len(data.load_rotten_tomatoes("all"))
    assert 3 not in set(strict["id"])


def test_bad_split() -> None:
    with pytest.raises(ValueError, match="train"):
        data.load_rotten_tomatoes("validation")


def test_vader_lexicon() -> None:
    lexicon = data.load_vader_lexicon()
    assert list(lexicon.columns) == ["word", "valence", "std"]
    assert lexicon["word"].is_unique
    assert len(lexicon) > 7000
    valence = lexicon.set_index("word")["valence"]
    assert valence["good"] > 0
    assert valence["bad"] < 0
    assert valence["bad"] == pytest.approx(-2.5)
    assert (lexicon["std"] >= 0).all()


def _empty_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("CAPTUM_ERASURE_CACHE", str(tmp_path))
    return tmp_path / "downloads" / data.VADER_SDIST_NAME


def test_download_failure_message(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    target = _empty_cache(monkeypatch, tmp_path)

    def failing_pip(cmd, **kwargs):
        assert "download" in cmd and "vaderSentiment==3.3.2" in cmd
        return subprocess.CompletedProcess(cmd, 1, stdout="", stderr="ERROR: network is unreachable")

    monkeypatch.setattr(data.subprocess, "run", failing_pip)
    with pytest.raises(RuntimeError, match="Could not download the vaderSentiment") as raised:
        data.vader_sdist_path()
    message = str(raised.value)
    assert "PyPI" in message
    assert str(target) in message
    assert "network is unreachable" in message
    # Nothing half-downloaded is left behind.
    assert list((tmp_path / "downloads").iterdir()) == []


def test_download_failure_with_real_pip(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """pip with no index and no local wheels fails fast, without touching the network."""
    _empty_cache(monkeypatch, tmp_path)
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "no-wheels-here"))
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    with pytest.raises(RuntimeError, match="vaderSentiment"):
        data.vader_sdist_path()


def test_manually_placed_sdist_is_used(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cached = data.vader_sdist_path()  # the real cache, before switching
    target = _empty_cache(monkeypatch, tmp_path)
    target.parent.mkdir(parents=True)
    target.write_bytes(cached.read_bytes())

    def no_pip(*args, **kwargs):
        raise AssertionError("pip must not run when the sdist is already cached")

    monkeypatch.setattr(data.subprocess, "run", no_pip)
    assert data.vader_sdist_path() == target
