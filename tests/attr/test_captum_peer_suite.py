"""Captum's own FeatureAblation tests (``../shared/peer/captum``, BSD-3) with WordErasure in
FeatureAblation's place: every test stock Captum passes must pass (today 65 of 65)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PEER = ROOT.parent / "shared" / "peer" / "captum" / "run"


@pytest.mark.skipif(not PEER.is_file(), reason="../shared/peer/captum is not beside the checkout")
def test_captum_feature_ablation_suite_passes_with_word_erasure():
    env = {**os.environ, "PYTHON": sys.executable}
    done = subprocess.run(["bash", str(PEER)], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    stock, ours = (line for line in done.stdout.splitlines() if ": " in line and "passed" in line)
    assert stock.split(": ")[1].split(" in ")[0] == ours.split(": ")[1].split(" in ")[0]
