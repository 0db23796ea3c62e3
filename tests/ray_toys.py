"""Model factories for the Ray tests: module-level functions, so Ray actors import them (the
Ray fixture puts tests/ on the workers' PYTHONPATH) instead of pickling models."""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path

import torch
from conftest import build_tiny_model, build_tiny_tokenizer


def init_local_ray():
    """A local Ray for a test module: 2 CPUs, this checkout and tests/ on its workers' path,
    one torch thread per worker, offline."""
    import ray
    root = Path(__file__).resolve().parents[1]
    paths = [str(root), str(root / "tests"), os.environ.get("PYTHONPATH", "")]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": os.pathsep.join(p for p in paths if p),
                                       "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}})


def tiny_factory(device=None):
    """The tiny random BERT and tokenizer of conftest (seed 0)."""
    return build_tiny_model().to(device or "cpu"), build_tiny_tokenizer()


class SlowModel(torch.nn.Module):
    """The tiny model, sleeping per forward, so a test can kill an actor mid-run; every
    actor writes its pid into ``folder``."""

    def __init__(self, model, seconds):
        super().__init__()
        self.inner, self.seconds = model, seconds
        self.config = model.config

    def forward(self, *args, **kwargs):
        time.sleep(self.seconds)
        return self.inner(*args, **kwargs)


class SlowFactory:
    def __init__(self, folder, seconds=0.05):
        self.folder, self.seconds = str(folder), seconds

    def __call__(self, device=None):
        Path(self.folder, f"{os.getpid()}.pid").write_text(str(os.getpid()))
        model, tokenizer = tiny_factory(device)
        return SlowModel(model, self.seconds).eval(), tokenizer


def broken_factory(device=None):
    raise OSError("no weights at /nonexistent/model")


def _write_pid_and_wait(folder, driver_pid, seconds, module, args):
    if os.getpid() != driver_pid:
        Path(folder, f"{os.getpid()}.pid").write_text(str(os.getpid()))
    time.sleep(seconds)


def pid_writing(model, folder, driver_pid, seconds=0.02):
    """``model`` sleeping before every forward and writing the pid of each process it runs in
    except ``driver_pid`` into ``folder`` (a pre-hook that pickles by reference), so a test can
    kill the Ray worker running a task."""
    model.register_forward_pre_hook(
        functools.partial(_write_pid_and_wait, str(folder), driver_pid, seconds))
    return model
