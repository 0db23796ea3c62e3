"""Offline sentiment data taken from the ``vaderSentiment`` 3.3.2 source distribution.

Source
------
The VADER sdist on PyPI (``vaderSentiment-3.3.2.tar.gz``) ships the human-rated
evaluation corpora of Hutto & Gilbert, "VADER: A Parsimonious Rule-based Model
for Sentiment Analysis of Social Media Text" (ICWSM 2014), inside the nested
archive ``additional_resources/hutto_ICWSM_2014.tar.gz``:

* ``movie``  - 10,605 Rotten Tomatoes review sentences (the sentences behind SST),
* ``amazon`` - 3,708 Amazon product review sentences,
* ``nyt``    - 5,190 New York Times opinion-editorial sentences,
* ``tweets`` - 4,200 tweets.

Each line is ``id<TAB>mean_rating<TAB>text``; the rating is the mean of about
20 human ratings on a -4 (very negative) .. +4 (very positive) scale.  The sdist
also holds ``vaderSentiment/vader_lexicon.txt``: a human mean valence per word.

The sdist is fetched once with ``pip download`` (PyPI access needed once) and
cached under :func:`cache_dir`; everything afterwards is read from the cached
archive in memory, so no extraction step is needed.

Rotten Tomatoes binary split
----------------------------
:func:`load_rotten_tomatoes` turns the movie ratings into binary labels
(1 = positive if rating > 0, else 0), drops snippets with
``|rating| < neutral_margin`` (default 0.5, about 5% of the data: too ambiguous
for a binary label) and empty texts, and splits by snippet id:
``id % 10 == 0`` -> "test", ``id % 10 == 1`` -> "dev", everything else -> "train"
(about 80/10/10).  The split depends only on the id, so it is stable across
margins and versions.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import pandas as pd

VADER_VERSION = "3.3.2"
VADER_SDIST_NAME = f"vaderSentiment-{VADER_VERSION}.tar.gz"
# sha256 of the PyPI file; pip already checks it on download, this guards manual copies.
VADER_SDIST_SHA256 = "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9"

_CORPUS_FILES = {
    "movie": "movieReviewSnippets_GroundTruth.txt",
    "amazon": "amazonReviewSnippets_GroundTruth.txt",
    "nyt": "nytEditorialSnippets_GroundTruth.txt",
    "tweets": "tweets_GroundTruth.txt",
}
CORPORA: tuple[str, ...] = tuple(_CORPUS_FILES)
SPLITS: tuple[str, ...] = ("train", "dev", "test", "all")

_INNER_ARCHIVE = "additional_resources/hutto_ICWSM_2014.tar.gz"
_LEXICON_FILE = "vaderSentiment/vader_lexicon.txt"


def cache_dir() -> Path:
    """Directory for downloads and built models, created on demand.

    ``$CAPTUM_ERASURE_CACHE`` if set, else ``$XDG_CACHE_HOME/captum-erasure``,
    else ``~/.cache/captum-erasure``.
    """
    explicit = os.environ.get("CAPTUM_ERASURE_CACHE")
    if explicit:
        path = Path(explicit).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
        path = base / "captum-erasure"
    path.mkdir(parents=True, exist_ok=True)
    return path


def vader_sdist_path() -> Path:
    """Path of the cached ``vaderSentiment-3.3.2.tar.gz``, downloading it once from PyPI.

    To work fully offline, copy the file to ``<cache_dir()>/downloads/`` by hand.
    """
    downloads = cache_dir() / "downloads"
    target = downloads / VADER_SDIST_NAME
    if target.is_file():
        return target
    downloads.mkdir(parents=True, exist_ok=True)
    # Download next to the target so the final os.replace stays on one filesystem (atomic).
    with tempfile.TemporaryDirectory(dir=downloads, prefix=".pip-") as tmpdir:
        cmd = [sys.executable, "-m", "pip", "download", "--no-binary", ":all:",
               "--no-deps", f"vaderSentiment=={VADER_VERSION}", "-d", tmpdir]
        result = subprocess.run(cmd, capture_output=True, text=True)
        fetched = sorted(Path(tmpdir).glob("*.tar.gz"))
        if result.returncode != 0 or not fetched:
            raise RuntimeError(_download_error(target, result.stderr or result.stdout or ""))
        _check_sha256(fetched[0])
        os.replace(fetched[0], target)
    return target


def _download_error(target: Path, pip_output: str) -> str:
    tail = "\n".join(pip_output.strip().splitlines()[-15:])
    return (
        f"Could not download the vaderSentiment {VADER_VERSION} source distribution with pip. "
        "It is needed once (it holds the sentiment data) and requires access to PyPI. "
        f"To work offline, download {VADER_SDIST_NAME} elsewhere (e.g. "
        f"`pip download --no-binary :all: --no-deps vaderSentiment=={VADER_VERSION}`) "
        f"and copy it to {target} (set CAPTUM_ERASURE_CACHE to change the cache directory).\n"
        f"pip output (tail):\n{tail}"
    )


def _check_sha256(path: Path) -> None:
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != VADER_SDIST_SHA256:
        raise RuntimeError(f"{path} has sha256 {digest}, expected {VADER_SDIST_SHA256}.")


def _sdist_member(tar: tarfile.TarFile, suffix: str) -> bytes:
    """Bytes of the one member whose path ends with ``suffix`` (top folder name varies)."""
    for member in tar.getmembers():
        if member.isfile() and member.name.endswith(suffix):
            handle = tar.extractfile(member)
            assert handle is not None
            return handle.read()
    raise RuntimeError(f"{suffix} not found in {tar.name}; is the cached sdist damaged?")


@functools.lru_cache(maxsize=1)
def _ground_truth_files() -> dict[str, bytes]:
    """All four ground-truth files, read from the nested archive in memory (a few MB)."""
    with tarfile.open(vader_sdist_path(), "r:gz") as outer:
        inner_bytes = _sdist_member(outer, _INNER_ARCHIVE)
    wanted = {name: corpus for corpus, name in _CORPUS_FILES.items()}
    files: dict[str, bytes] = {}
    with tarfile.open(fileobj=io.BytesIO(inner_bytes), mode="r:gz") as inner:
        for member in inner.getmembers():
            corpus = wanted.get(Path(member.name).name)
            if corpus and member.isfile():
                handle = inner.extractfile(member)
                assert handle is not None
                files[corpus] = handle.read()
    missing = set(_CORPUS_FILES) - set(files)
    if missing:
        raise RuntimeError(f"Corpora {sorted(missing)} missing from {_INNER_ARCHIVE}.")
    return files


def _text_lines(raw: bytes) -> list[str]:
    """Decoded non-blank lines; split on '\\n' only so odd Unicode breaks stay in the text."""
    text = raw.decode("utf-8-sig")
    return [line.rstrip("\r") for line in text.split("\n") if line.strip()]


@functools.lru_cache(maxsize=len(_CORPUS_FILES))
def _parse_snippets(corpus: str) -> pd.DataFrame:
    ids, ratings, texts = [], [], []
    for number, line in enumerate(_text_lines(_ground_truth_files()[corpus]), start=1):
        # maxsplit keeps any tab inside the text (none occur in 3.3.2, but be safe).
        parts = line.split("\t", 2)
        if len(parts) != 3:
            raise ValueError(f"{corpus} snippets line {number}: expected 3 tab-separated fields")
        ids.append(parts[0].strip())
        ratings.append(float(parts[1]))
        texts.append(parts[2].strip())
    frame = pd.DataFrame({"id": ids, "rating": ratings, "text": texts})
    # movie/tweets ids are integers; amazon/nyt ids are "<document>_<sentence>" strings.
    if frame["id"].str.fullmatch(r"\d+").all():
        frame["id"] = frame["id"].astype("int64")
    else:
        frame["id"] = frame["id"].astype(str)
    frame["text"] = frame["text"].astype(str)
    return frame


def load_snippets(corpus: str = "movie") -> pd.DataFrame:
    """Human-rated sentences of one VADER corpus: columns ``id``, ``rating``, ``text``.

    ``rating`` is the mean human rating in [-4, 4].  ``id`` is an int for "movie" and
    "tweets"; for "amazon" and "nyt" it is a ``"<document>_<sentence>"`` string.
    """
    if corpus not in _CORPUS_FILES:
        raise ValueError(f"Unknown corpus {corpus!r}; valid corpora: {', '.join(CORPORA)}")
    return _parse_snippets(corpus).copy()


def split_of(snippet_id: int) -> str:
    """The fixed Rotten Tomatoes split of a movie snippet id (see module docstring)."""
    remainder = int(snippet_id) % 10
    return "test" if remainder == 0 else "dev" if remainder == 1 else "train"


def load_rotten_tomatoes(split: str = "train", neutral_margin: float = 0.5) -> pd.DataFrame:
    """Binary Rotten Tomatoes sentiment: columns ``id``, ``text``, ``rating``, ``label``.

    ``label`` is 1 (positive) if ``rating > 0`` else 0.  Snippets with
    ``|rating| < neutral_margin`` are dropped as too ambiguous for a binary label
    (about 5% at the default 0.5), as are empty texts.  ``split`` is "train", "dev",
    "test" (by ``id % 10``, see module docstring) or "all" for everything kept.
    """
    if split not in SPLITS:
        raise ValueError(f"Unknown split {split!r}; valid splits: {', '.join(SPLITS)}")
    if neutral_margin < 0:
        raise ValueError("neutral_margin must be >= 0")
    frame = load_snippets("movie")
    keep = (frame["rating"].abs() >= neutral_margin) & (frame["text"].str.len() > 0)
    # A rating of exactly 0 has no sign: drop it even when neutral_margin is 0.
    keep &= frame["rating"] != 0
    frame = frame[keep]
    if split != "all":
        frame = frame[frame["id"].map(split_of) == split]
    frame = frame.assign(label=(frame["rating"] > 0).astype("int64"))
    return frame[["id", "text", "rating", "label"]].reset_index(drop=True)


@functools.lru_cache(maxsize=1)
def _parse_lexicon() -> pd.DataFrame:
    with tarfile.open(vader_sdist_path(), "r:gz") as outer:
        raw = _sdist_member(outer, _LEXICON_FILE)
    rows = []
    for line in _text_lines(raw):
        parts = line.split("\t")
        if len(parts) < 3:
            continue
        rows.append((parts[0].strip(), float(parts[1]), float(parts[2])))
    frame = pd.DataFrame(rows, columns=["word", "valence", "std"])
    # 14 tokens (e.g. "lol", "ok") appear twice; VADER's own dict keeps the last entry.
    return frame.drop_duplicates("word", keep="last").reset_index(drop=True)


def load_vader_lexicon() -> pd.DataFrame:
    """VADER's human valence lexicon: columns ``word``, ``valence`` (mean rating in
    [-4, 4]), ``std`` (spread of the ~10 human ratings).  Words are as in VADER
    (lower-case words, plus emoticons and a few acronyms); one row per word."""
    return _parse_lexicon().copy()















# -- human agreement --------------------------------------------------------------------------
def vader_valences() -> dict[str, float]:
    """Word -> mean human valence in [-4, 4] from the VADER lexicon in the cached
    ``vaderSentiment`` sdist (fetched once with pip; a clear error says where to put the file
    when offline)."""
    from captum_erasure.data import load_vader_lexicon
    frame = load_vader_lexicon()
    return dict(zip(frame["word"].str.lower(), frame["valence"].astype(float)))

