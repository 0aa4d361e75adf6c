"""Cost of a binary training step against its real-valued twin, and trial start-up time.

In :mod:`bnn_tune.bench` with the whole-model benchmark (a stage above ``train``, which it times).

A search costs trial-epochs x the cost of an epoch, so a binary step should cost about what the same
network with real weights and Adam costs. :func:`step_rows` times :meth:`bnn_tune.train.Trainer.train_step`
for each binary optimizer and for the *real twin* (the same architecture built with ``binary=False``:
ReLU instead of sign activations, real weights, one ``torch.optim.Adam``, no flip counter) on the same
fixed batch. Every round steps the twin and then each optimizer once, so load on a shared machine hits
all of them alike; each row reports medians and ``ratio = binary / twin`` measured in the same run.
:func:`step_split` splits a binary step into forward (+ loss), backward (+ zero_grad), the optimizers'
``step`` and the flip counter's post-step hook. :func:`startup_cold` times a fresh process from its start
to the end of its first training step; :func:`startup_warm` the same in a process that already ran a
trial (a reused Ray worker: imports done, dataset cached). :func:`search_rate` times ``make run``'s
search command and returns trials per minute.

Example:
    >>> rows = step_rows("mlp", 0.25, batch_size=16, threads=1, optimizers=["bop"], steps=2, warmup=1)
    >>> sorted(rows[0])[:3]
    ['batch_size', 'binary_ms', 'model']
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

import torch

from ..data import DataSplits, load_dataset
from ..nn import build_model
from ..train import Trainer

__all__ = ["DEFAULT_CASES", "search_rate", "startup_cold", "startup_warm", "step_rows", "step_split",
           "synthetic_images"]

# (model, width): the MLPs run on digits (64 inputs), the convnets on CIFAR-shaped random images.
DEFAULT_CASES: list[tuple[str, float]] = [
    ("mlp", 1.0), ("mlp", 4.0), ("binarynet", 0.25), ("vgg_small", 0.5), ("birealnet18", 0.25),
]
CONVNETS = ("binarynet", "vgg_small", "birealnet18")


def synthetic_images(n: int = 512, shape: tuple[int, ...] = (3, 32, 32), num_classes: int = 10) -> DataSplits:
    """CIFAR-shaped random images and labels (timing only: nothing to learn, no download)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, *shape, generator=g)
    y = torch.randint(0, num_classes, (n,), generator=g)
    m = max(1, n // 8)
    return DataSplits("images", x, y, x[:m], y[:m], x[:m], y[:m], num_classes, tuple(shape))


def _data_for(model: str) -> DataSplits:
    return synthetic_images() if model in CONVNETS else load_dataset("digits")


def _config(model: str, width: float, batch_size: int, optimizer: str) -> dict[str, Any]:
    return dict(model=model, width=width, batch_size=batch_size, optimizer=optimizer, epochs=1, augment=False,
                seed=0, device="cpu")


def _real_twin(model: str, width: float, batch_size: int, data: DataSplits) -> Trainer:
    """A Trainer whose model is the real-valued twin trained by Adam, without a flip counter."""
    t = Trainer(_config(model, width, batch_size, "latent_adam"), data=data)
    t.flips.detach()
    t.model = build_model(model, data.input_shape, data.num_classes, binary=False, width=width,
                          bn_momentum=t.config.bn_momentum).to(t.device)
    t._forward = t.model
    t.optimizer = torch.optim.Adam(t.model.parameters(), lr=t.config.lr)  # type: ignore[assignment]
    return t


def _batch(data: DataSplits, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    idx = torch.randperm(len(data.y_train), generator=torch.Generator().manual_seed(1))[:batch_size]
    if len(idx) < batch_size:  # a batch larger than the training split: repeat it
        idx = idx.repeat((batch_size + len(idx) - 1) // len(idx))[:batch_size]
    return data.x_train[idx], data.y_train[idx]


def step_rows(model: str, width: float, *, batch_size: int, threads: int, optimizers: Sequence[str],
              steps: int = 15, warmup: int = 3) -> list[dict[str, Any]]:
    """Median step time of each binary optimizer and of the real twin, interleaved round by round.

    Returns:
        One dict per optimizer: ``model, width, batch_size, threads, optimizer, binary_ms, real_ms, ratio``.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        data = _data_for(model)
        x, y = _batch(data, batch_size)
        runners = {"real": _real_twin(model, width, batch_size, data)}
        for name in optimizers:
            runners[name] = Trainer(_config(model, width, batch_size, name), data=data)
        times: dict[str, list[float]] = {k: [] for k in runners}
        for i in range(warmup + steps):
            for name, t in runners.items():
                t0 = time.perf_counter()
                t.train_step(x, y)
                if i >= warmup:
                    times[name].append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(previous)
    real = statistics.median(times["real"])
    return [dict(model=model, width=width, batch_size=batch_size, threads=threads, optimizer=name,
                 binary_ms=1e3 * statistics.median(times[name]), real_ms=1e3 * real,
                 ratio=statistics.median(times[name]) / real) for name in optimizers]


def step_split(model: str, width: float, *, batch_size: int, threads: int, optimizer: str, steps: int = 15,
               warmup: int = 3) -> dict[str, float]:
    """Median milliseconds of the parts of one binary step: ``forward`` (model + loss), ``backward``
    (zero_grad + backward), ``opt_step`` (binary + Adam ``step``), ``flips`` (the flip counter's hook)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        data = _data_for(model)
        x, y = _batch(data, batch_size)
        t = Trainer(_config(model, width, batch_size, optimizer), data=data)
        t.flips.detach()  # its hooks are called by hand below, so they can be timed apart
        parts: dict[str, list[float]] = {"forward": [], "backward": [], "opt_step": [], "flips": []}
        for i in range(warmup + steps):
            t0 = time.perf_counter()
            with t._autocast():
                loss = torch.nn.functional.cross_entropy(t._forward(x), y)
            t1 = time.perf_counter()
            t.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            t2 = time.perf_counter()
            t.flips.before_step()  # free in training: the signs saved by the last after_step are reused
            t3 = time.perf_counter()
            t.optimizer.step()
            t4 = time.perf_counter()
            t.flips.after_step()
            t5 = time.perf_counter()
            if i >= warmup:
                for k, dt in zip(parts, (t1 - t0, t2 - t1, t4 - t3, t5 - t4)):
                    parts[k].append(dt)
    finally:
        torch.set_num_threads(previous)
    return {k: 1e3 * statistics.median(v) for k, v in parts.items()}


_CHILD = """
import sys, time
t_import = time.time()
from bnn_tune.train import Trainer
t = Trainer({"dataset": "digits", "optimizer": "bop", "epochs": 1, "seed": 0})
x, y = next(iter(t._batches()))
t.train_step(x, y)
t_step = time.time()
print(t_import, t_step)
"""


def startup_cold(repeats: int = 3) -> dict[str, float]:
    """Seconds from spawning ``python`` to the end of its first training step (median of ``repeats``),
    and the part of it before Python ran the first line (interpreter start)."""
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo root
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    totals, interp = [], []
    for _ in range(repeats):
        t0 = time.time()
        out = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True, text=True, check=True)
        t_import, t_step = (float(v) for v in out.stdout.split()[-2:])
        totals.append(t_step - t0)
        interp.append(t_import - t0)
    return {"first_step_s": statistics.median(totals), "interpreter_s": statistics.median(interp)}


def startup_warm(repeats: int = 5) -> dict[str, float]:
    """Seconds from ``Trainer(config)`` to the end of its first step in a process that already ran a
    trial (median over ``repeats`` new configs with different seeds)."""
    cfg = {"dataset": "digits", "optimizer": "bop", "epochs": 1}
    Trainer(dict(cfg, seed=0))  # the worker's first trial: imports and dataset cache
    times = []
    for seed in range(1, repeats + 1):
        t0 = time.perf_counter()
        t = Trainer(dict(cfg, seed=seed))
        x, y = next(iter(t._batches()))
        t.train_step(x, y)
        times.append(time.perf_counter() - t0)
    return {"first_step_s": statistics.median(times)}


MAKE_RUN = ["search", "--optimizer", "bop", "--dataset", "digits", "--samples", "16"]


def search_rate(out_dir: str, *, samples: int = 16, extra: Sequence[str] = ()) -> dict[str, float]:
    """Run ``make run``'s command (``bnn-tune search --optimizer bop --dataset digits --samples 16``) in a
    subprocess; returns its wall time and trials per minute (driver start-up included)."""
    cmd = [sys.executable, "-m", "bnn_tune.cli", *MAKE_RUN[:-1], str(samples), "--out", out_dir, *extra]
    env = dict(os.environ, RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    wall = time.perf_counter() - t0
    return {"samples": samples, "wall_s": wall, "trials_per_minute": 60.0 * samples / wall}
