"""``export_best``: best trial of a Ray Tune or Optuna search -> config, packed model, benchmark.

Sources:

* **Ray Tune**: a ``ResultGrid`` (``tuner.fit()``), or the experiment directory
  (``<storage_path>/<name>``). The directory is read without Ray: every trial directory holds
  ``params.json`` (the config), ``result.json`` (one JSON line per report) and ``checkpoint_NNNNNN/``
  directories with ``checkpoint.pt`` (= :meth:`bnn_tune.Trainer.state_dict`, written by
  :func:`bnn_tune.trainable`). The best trial is the one whose ``metric`` (``val_acc`` by default;
  ``scope="last"``: its last report, ``"all"``: its best report) is best; its checkpoint is the one
  saved with the chosen report (``checkpoint_dir_name``) or, failing that, the latest one.
* **Optuna**: a ``Study``, or a storage URL with ``study_name``. The best trial's flat config is
  ``trial.user_attrs["bnn_tune:config"]`` (:func:`bnn_tune.objective` stores it; without it the
  trial's ``params`` are used) and its checkpoint ``trial.user_attrs["bnn_tune:checkpoint"]`` when the
  objective was given an artifact directory.

Without a usable checkpoint the best config is retrained with :func:`bnn_tune.fit` (the summary says
``"weights": "retrained"``). Checkpoints are read with ``torch.load(weights_only=True)``.

Outputs in ``out_dir``: ``config.json`` (loadable by ``fit``), ``model.bnn.safetensors`` (the packed
model), ``bench.json`` and ``bench.png`` (:func:`bnn_tune.bench.benchmark_model`) and
``export.json`` (provenance: source, trial, metric, weights origin, test accuracy of the PyTorch and
the packed model and their agreement, and ``packed_raw_test_acc``: the packed model's accuracy on the
raw test arrays, e.g. sklearn digits ``X`` with values 0..16, through the input transform stored in
the file; ``null`` for a dataset without one).
"""

from __future__ import annotations

import glob
import json
import logging
import math
import os
from dataclasses import dataclass, field
from typing import Any

import torch

from .._errors import PathNotFoundError
from ..config import TrialConfig

__all__ = ["BestTrial", "export_best", "find_best"]

logger = logging.getLogger(__name__)

CHECKPOINT_FILE = "checkpoint.pt"
from ..plugins._outcome import CHECKPOINT_ATTR, CONFIG_ATTR  # noqa: E402


@dataclass
class BestTrial:
    """The best trial of a search: its flat config, metric value and checkpoint file (if any)."""

    config: dict[str, Any]
    metric: str
    value: float
    trial_id: str
    checkpoint: str | None
    source: str
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------- Ray
def _read_jsonl(path: str) -> list[dict[str, Any]]:
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # a trial killed mid-write leaves a partial last line
    return rows


def _checkpoint_file(path: str | None) -> str | None:
    if not path:
        return None
    f = os.path.join(path, CHECKPOINT_FILE) if os.path.isdir(path) else path
    return f if os.path.isfile(f) else None


def _better(a: float, b: float, mode: str) -> bool:
    return a > b if mode == "max" else a < b


def _ray_dir(path: str, metric: str, mode: str, scope: str) -> BestTrial:
    trials = []
    for params in sorted(glob.glob(os.path.join(path, "*", "params.json"))):
        tdir = os.path.dirname(params)
        res = os.path.join(tdir, "result.json")
        rows = [r for r in (_read_jsonl(res) if os.path.isfile(res) else [])
                if isinstance(r.get(metric), (int, float)) and math.isfinite(r[metric])]
        if not rows:
            continue
        if scope == "last":
            row = rows[-1]
        else:
            row = rows[0]
            for r in rows[1:]:
                if _better(r[metric], row[metric], mode):
                    row = r
        trials.append((tdir, params, row))
    if not trials:
        raise ValueError(f"No Ray Tune trial with a reported {metric!r} under {path!r} (expected trial "
                         "directories with params.json and result.json).")
    tdir, params, row = trials[0]
    for t in trials[1:]:
        if _better(t[2][metric], row[metric], mode):
            tdir, params, row = t
    with open(params) as f:
        config = json.load(f)
    ckpt = None
    name = row.get("checkpoint_dir_name")
    if name:
        ckpt = _checkpoint_file(os.path.join(tdir, name))
    if ckpt is None:
        dirs = sorted(glob.glob(os.path.join(tdir, "checkpoint_*")))
        ckpt = _checkpoint_file(dirs[-1]) if dirs else None
    return BestTrial(config, metric, float(row[metric]), os.path.basename(tdir), ckpt, f"ray:{path}")


def _ray_result_grid(grid: Any, metric: str, mode: str, scope: str) -> BestTrial:
    result = grid.get_best_result(metric=metric, mode=mode, scope=scope)
    ckpt = None
    if getattr(result, "checkpoint", None) is not None:
        ckpt = _checkpoint_file(result.checkpoint.path)
    value = (result.metrics or {}).get(metric, float("nan"))
    trial_id = str((result.metrics or {}).get("trial_id", os.path.basename(str(result.path))))
    return BestTrial(dict(result.config), metric, float(value), trial_id, ckpt, f"ray:{result.path}")


# ---------------------------------------------------------------------- Optuna
def _optuna(study: Any, metric: str) -> BestTrial:
    try:
        trial = study.best_trial
    except RuntimeError as exc:  # multi-objective
        raise ValueError(f"Cannot pick one best trial of study {study.study_name!r}: {exc}") from exc
    except ValueError as exc:
        raise ValueError(f"Study {study.study_name!r} has no completed trial to export.") from exc
    notes = []
    config = trial.user_attrs.get(CONFIG_ATTR)
    if config is None:
        config = dict(trial.params)
        notes.append(f"trial {trial.number} has no user_attrs[{CONFIG_ATTR!r}]; used its params as the config")
    ckpt = _checkpoint_file(trial.user_attrs.get(CHECKPOINT_ATTR))
    if trial.user_attrs.get(CHECKPOINT_ATTR) and ckpt is None:
        notes.append(f"checkpoint {trial.user_attrs[CHECKPOINT_ATTR]!r} not found")
    return BestTrial(dict(config), metric, float(trial.value), str(trial.number), ckpt,
                     f"optuna:{study.study_name}", notes)


def _load_study(url: str, study_name: str | None) -> Any:
    """A study of an existing storage given by URL, opened for reading (nothing is created)."""
    from .._imports import require

    # the CLI opens storages with bnn_tune.search's make_storage(create=False); this API keeps Optuna's own URL
    # reading, but a SQLite URL whose file is missing must not leave an empty new database behind
    if url.startswith("sqlite:///") and url[len("sqlite:///"):] not in ("", ":memory:") and not os.path.isfile(
            url[len("sqlite:///"):].split("?")[0]):
        raise PathNotFoundError(f"No Optuna storage file at {url[len('sqlite:///'):]!r} (storage={url!r}); check "
                                "the path.")
    optuna = require("optuna", feature="export_best from an Optuna study")
    names = sorted(optuna.get_all_study_names(storage=url))
    if study_name is None:
        raise ValueError(f"An Optuna storage URL ({url!r}) needs `study_name` (CLI: --study); studies in it: {names}.")
    if study_name not in names:
        raise ValueError(f"No study named {study_name!r} in {url!r}. Available: {names}; choose one with --study.")
    return optuna.load_study(study_name=study_name, storage=url)


def find_best(source: Any, *, study_name: str | None = None, metric: str = "val_acc", mode: str = "max",
              scope: str = "last") -> BestTrial:
    """Locate the best trial of ``source`` (see :func:`export_best`)."""
    if mode not in ("max", "min"):
        raise ValueError(f"`mode` must be 'max' or 'min', but got mode={mode!r}.")
    if scope not in ("last", "all"):
        raise ValueError(f"`scope` must be 'last' or 'all', but got scope={scope!r}.")
    if isinstance(source, BestTrial):  # chosen by the caller (``bnn-tune search`` exports its ranking's best)
        return source
    if hasattr(source, "best_trial") and hasattr(source, "study_name"):
        return _optuna(source, metric)
    if hasattr(source, "get_best_result"):
        return _ray_result_grid(source, metric, mode, scope)
    if isinstance(source, (str, os.PathLike)):
        s = os.fspath(source)
        if study_name is not None or "://" in s:
            return _optuna(_load_study(s, study_name), metric)
        if os.path.isdir(s):
            if not glob.glob(os.path.join(s, "*", "params.json")) and any(
                    os.path.exists(os.path.join(s, f)) for f in ("summary.json", "study.db", "ray_results")):
                raise ValueError(f"{s!r} is the --out folder of a search, not a Ray experiment folder: export it with "
                                 f"`bnn-tune export {s}`.")
            return _ray_dir(s, metric, mode, scope)
        raise PathNotFoundError(f"No Ray Tune experiment directory at {s!r}; give the experiment directory "
                                "(<storage_path>/<name>) or an Optuna storage URL with study_name (CLI: --study).")
    raise TypeError(f"`source` must be a Ray ResultGrid, a Ray experiment path, an optuna.Study or an Optuna "
                    f"storage URL (with study_name), but got {type(source).__name__}.")


# ---------------------------------------------------------------------- export
def _writable_dir(out_dir: str | os.PathLike) -> None:
    """Create ``out_dir`` and check a file can be written there, before any work is done."""
    d = os.fspath(out_dir)
    try:
        os.makedirs(d, exist_ok=True)
        probe = os.path.join(d, f".bnn-tune-write-test-{os.getpid()}")
        with open(probe, "w"):
            pass
        os.remove(probe)
    except OSError as exc:
        raise ValueError(f"Cannot write to the output folder out_dir={d!r} ({exc.strerror or exc}); choose a "
                         "folder you can write to (CLI: --out).") from exc


def export_best(
    source: Any,
    out_dir: str | os.PathLike,
    *,
    study_name: str | None = None,
    metric: str = "val_acc",
    mode: str = "max",
    scope: str = "last",
    bench: bool = True,
    bench_device: str = "cpu",
    bench_threads: int | None = 1,
    quick: bool = True,
    retrain: bool = True,
    formats: tuple[str, ...] = ("packed",),
) -> dict[str, Any]:
    """Export the best trial of a search: ``config.json``, packed model, benchmark.

    Args:
        source: a Ray ``ResultGrid`` or experiment directory, an ``optuna.Study``, or an Optuna
            storage URL (then ``study_name`` is required).
        out_dir: output directory (created).
        study_name: the Optuna study name for a storage URL.
        metric, mode, scope: how Ray trials are ranked (an Optuna study uses its own direction).
        bench: run the kernel benchmark on the exported model (``bench.json``, ``bench.png``).
        bench_device: ``"cpu"`` or ``"cuda"``.
        bench_threads: CPU threads for both sides of the benchmark (1: stable on shared machines,
            where torch's thread pool stalls; ``None``: torch's setting).
        quick: fewer benchmark repeats.
        retrain: without a checkpoint, retrain the best config with :func:`bnn_tune.fit`
            (otherwise raise).
        formats: what to write besides ``config.json``: ``"packed"`` (``model.bnn.safetensors``, always
            written: the other formats are made from it) and ``"lce"``: ``model.tflite``, the model converted by
            Larq Compute Engine (binary layers as ``LceBconv2d``; :mod:`bnn_tune.export._lce`), its test
            accuracy under LCE's interpreter and its agreement with PyTorch in ``export.json["lce"]``. ``"lce"``
            needs the LCE environment (``make lce-env``); without it an ``ImportError`` names the command.

    Returns:
        The summary written to ``export.json``.

    Example:
        >>> import optuna, bnn_tune  # doctest: +SKIP
        >>> export_best(study, "exported/")  # doctest: +SKIP
        {'trial': '3', 'weights': 'checkpoint', 'packed_test_acc': 0.93, ...}
    """
    from ..recipes import without_recipe
    from ..train import Trainer, fit
    from ._model import pack_model

    unknown = sorted(set(formats) - {"packed", "lce"})
    if unknown:
        raise ValueError(f"Unknown export format {unknown[0]!r}. Available: ['lce', 'packed'].")
    lce_env = None
    if "lce" in formats:
        from ._lce import lce_python

        lce_env = lce_python()  # a missing LCE environment fails before any training or writing
    best = find_best(source, study_name=study_name, metric=metric, mode=mode, scope=scope)
    config = TrialConfig.from_dict(best.config)  # raises ConfigError on a bad config
    _writable_dir(out_dir)
    cpu_config = config.replace(device="cpu")
    if best.checkpoint is not None:
        state = torch.load(best.checkpoint, map_location="cpu", weights_only=True)
        if "config" in state:
            config = TrialConfig.from_dict(state["config"])
            cpu_config = config.replace(device="cpu")
        # the checkpoint holds the weights: build the model without training a teacher/twin again
        trainer = Trainer(without_recipe(cpu_config))
        trainer.model.load_state_dict(state["model"])
        model, data, weights = trainer.model, trainer.data, "checkpoint"
    elif retrain:
        logger.warning("No checkpoint for the best trial %s; retraining its config with bnn_tune.fit.", best.trial_id)
        result = fit(cpu_config)
        if result.status == "diverged":
            raise RuntimeError(f"Retraining the best config diverged: {result.message}")
        model = result.model
        trainer = None
        from ..data import load_dataset

        data = load_dataset(config.dataset, val_fraction=config.val_fraction, root=config.data_root,
                            download=config.download)
        weights = "retrained"
    else:
        raise FileNotFoundError(f"The best trial {best.trial_id} of {best.source} has no checkpoint and "
                                "retrain=False.")
    model.eval()
    flat = config.to_dict()
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(flat, f, indent=2, sort_keys=True, default=str)
    packed = pack_model(model, flat, input_shape=tuple(data.input_shape), num_classes=data.num_classes,
                        input_transform=data.input_transform)
    packed.header["model"]["trial"] = {"source": best.source, "trial_id": best.trial_id, "metric": best.metric,
                                       "value": best.value, "weights": weights}
    specs = None
    if lce_env is not None:  # a layer without LCE form fails before anything is written
        from ._lce import keras_specs

        specs = keras_specs(packed.ops, tuple(data.input_shape))
    model_path = os.path.join(out_dir, "model.bnn.safetensors")
    packed.save(model_path)

    x, y = data.x_test.cpu(), data.y_test.cpu()
    with torch.no_grad():
        torch_pred = torch.cat([model(x[i: i + 512]).argmax(1) for i in range(0, len(y), 512)]).numpy()
    packed_pred = packed.predict(x, preprocessed=True)
    raw_acc = None
    if data.x_test_raw is not None and packed.input_transform is not None:  # as a user calls it: raw arrays
        raw_acc = float((packed.predict(data.x_test_raw) == y.numpy()).mean())
    summary: dict[str, Any] = {
        "source": best.source, "trial": best.trial_id, "metric": best.metric, "value": best.value,
        "weights": weights, "checkpoint": best.checkpoint, "notes": best.notes,
        "config": "config.json", "model_file": "model.bnn.safetensors",
        "torch_test_acc": float((torch_pred == y.numpy()).mean()),
        "packed_test_acc": float((packed_pred == y.numpy()).mean()),
        "packed_raw_test_acc": raw_acc,
        "input_transform": packed.header["input_transform"] is not None,
        "agreement": float((packed_pred == torch_pred).mean()),
        "weight_bytes": packed.weight_bytes(),
    }
    if lce_env is not None and specs is not None:
        summary["lce"] = _export_lce(specs, x, y.numpy(), torch_pred, os.path.join(out_dir, "model.tflite"), lce_env)
    if bench:
        from ..bench._model import benchmark_model, plot_results

        res = benchmark_model(config.model, tuple(data.input_shape), data.num_classes, width=config.width,
                              depth=config.depth, device=bench_device, quick=quick, packed=packed,
                              include_large_layer=False, threads=bench_threads)
        with open(os.path.join(out_dir, "bench.json"), "w") as f:
            json.dump(res, f, indent=2)
        plot_results(res, os.path.join(out_dir, "bench.png"))
        summary["bench"] = {"json": "bench.json", "plot": "bench.png"}
    with open(os.path.join(out_dir, "export.json"), "w") as f:
        json.dump(summary, f, indent=2, default=str)
    return summary


def _export_lce(specs: Any, x: torch.Tensor, y: Any, torch_pred: Any, path: str, python: str) -> dict[str, Any]:
    """Write ``model.tflite`` (LCE) and check it on the test set: accuracy and agreement with PyTorch."""
    from ._lce import LceWorker, export_lce

    with LceWorker(python) as worker:
        report = export_lce(specs, path, worker=worker)
        handle = worker.load(path, threads=1)
        xk = x.permute(0, 2, 3, 1).numpy() if x.ndim == 4 else x.reshape(len(x), -1).numpy()
        lce_pred = worker.predict(handle, xk).argmax(1)
        versions = worker.versions
    return {"model_file": os.path.basename(path), "bytes": report["bytes"], "ops": report["ops"],
            "lce_test_acc": float((lce_pred == y).mean()), "agreement": float((lce_pred == torch_pred).mean()),
            "versions": versions}

