"""What a ``bnn-tune search --out`` folder holds, read one way by ``bnn-tune export`` and ``bnn-tune report``.

Both backends write (the contract of :mod:`bnn_tune.search.cli`):

* ``<out>/summary.json``: ``backend`` (``"optuna"`` or ``"ray"``), ``study`` (its name), ``storage`` (the
  Optuna storage URL; may be null for ray), ``experiment_path`` (the Ray experiment folder), ``best``,
  ``trials``;
* ``<out>/best_config.json`` (``bnn-tune fit --config`` takes it as it is) and ``<out>/export/``.

Folders written before that contract: the Optuna backend wrote ``<out>/study.db`` and ``<out>/best.json``
(whose ``study`` names the study), the Ray backend ``<out>/ray_results/<name>/`` and a ``summary.json`` with
``experiment_path`` but no ``backend``.

:func:`resolve_search_dir` looks in this order, and the first that is there decides:

1. ``summary.json``: its ``backend``, ``storage``/``study`` or ``experiment_path`` (a path that no longer
   exists, e.g. the folder was moved or copied, falls back to the same name inside the folder);
2. ``study.db`` (or ``study.log``, ``*.journal``) inside: an Optuna storage;
3. a Ray experiment inside: ``ray_results/<experiment>/`` (or the folder itself) whose trial folders hold
   ``params.json``.

Example:
    >>> resolve_search_dir("runs/bop")  # doctest: +SKIP
    SearchDir(path=PosixPath('runs/bop'), backend='optuna', found='summary.json', storage='sqlite:///...', ...)
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .._errors import PathNotFoundError
from ._storage import make_storage, storage_file

__all__ = ["BEST_CONFIG_FILE", "EXPORT_DIR", "LOOKED_FOR", "SUMMARY_FILE", "SearchDir", "open_study",
           "resolve_search_dir", "storage_url"]

SUMMARY_FILE = "summary.json"
BEST_CONFIG_FILE = "best_config.json"
EXPORT_DIR = "export"
_OPTUNA_FILES = ("study.db", "study.log")
LOOKED_FOR = ("summary.json, study.db/study.log/*.journal (an Optuna study) and ray_results/<experiment>/ "
              "(Ray trial folders with params.json)")
"""What :func:`resolve_search_dir` looks for, in words (for error messages)."""


@dataclass(frozen=True)
class SearchDir:
    """A search's output folder, resolved.

    Attributes:
        path: the folder.
        backend: ``"optuna"`` or ``"ray"``.
        found: what identified it: ``"summary.json"``, the storage file's name or ``"ray_results"``.
        storage: the Optuna storage URL (optuna backend).
        study: the study name, when known (None: the storage's only study).
        experiments: the Ray experiment folders (ray backend; one, unless an old folder holds several).
        summary: the parsed ``summary.json`` (empty without one).
    """

    path: Path
    backend: str
    found: str
    storage: str | None = None
    study: str | None = None
    experiments: tuple[Path, ...] = ()
    summary: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def experiment_path(self) -> Path:
        """The one Ray experiment folder (raises ``ValueError`` naming them when there are several)."""
        if len(self.experiments) != 1:
            raise ValueError(f"{str(self.path)!r} holds {len(self.experiments)} Ray experiments: "
                             f"{[str(e) for e in self.experiments]}; give one of them.")
        return self.experiments[0]

    def source(self) -> Any:
        """What :func:`bnn_tune.export.export_best` takes: the ``optuna.Study`` or the Ray experiment path."""
        if self.backend == "optuna":
            assert self.storage is not None  # an optuna SearchDir always has one
            return open_study(self.storage, self.study)
        return str(self.experiment_path)


def open_study(storage: str, study_name: str | None = None) -> Any:
    """Load a study of an existing storage for reading (nothing is created).

    ``study_name=None`` takes the storage's only study. A missing SQLite/journal file, an unknown study
    name or a storage with several studies and no name raise ``ValueError`` saying which studies exist.
    """
    import optuna

    st = make_storage(storage, create=False)
    names = sorted(optuna.get_all_study_names(storage=st))
    if study_name is None:
        if len(names) == 1:
            study_name = names[0]
        else:
            raise ValueError(f"The Optuna storage {storage!r} holds {len(names)} studies: {names}; choose one "
                             "with --study." if names else f"The Optuna storage {storage!r} holds no study.")
    elif study_name not in names:
        raise ValueError(f"No study named {study_name!r} in {storage!r}. Available: {names}; choose one with "
                         "--study.")
    return optuna.load_study(study_name=study_name, storage=st)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"Cannot read {str(path)!r}: {exc}; repair or remove it.") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{str(path)!r} must hold a JSON object, but holds a {type(doc).__name__}.")
    return doc


def _is_experiment(d: Path) -> bool:
    return d.is_dir() and any(d.glob("*/params.json"))


def _ray_experiments(folder: Path) -> tuple[Path, ...]:
    if _is_experiment(folder):
        return (folder,)
    results = folder / "ray_results"
    return tuple(sorted(d for d in results.glob("*") if _is_experiment(d))) if results.is_dir() else ()


def _optuna_files(folder: Path) -> list[Path]:
    found = [folder / n for n in _OPTUNA_FILES if (folder / n).is_file()]
    return found + sorted(p for p in folder.glob("*.journal") if p.is_file())


def storage_url(path: Path) -> str:
    """The storage URL of a local Optuna file: ``sqlite:///<abs>`` for ``.db``, else ``journal://<abs>``."""
    path = path.resolve()
    return f"sqlite:///{path}" if path.suffix == ".db" else f"journal://{path}"


def _moved(folder: Path, storage: str) -> str:
    """``storage`` itself, or the file of the same name inside ``folder`` when the URL's file is gone."""
    local = storage_file(storage)
    if local is not None and not local[1].is_file() and (folder / local[1].name).is_file():
        return storage_url(folder / local[1].name)
    return storage


def _from_summary(folder: Path, doc: dict[str, Any]) -> SearchDir | None:
    backend = doc.get("backend") or ("ray" if doc.get("experiment_path") else None)
    study = doc.get("study") if isinstance(doc.get("study"), str) else None
    if backend == "optuna":
        storage = doc.get("storage")
        if not isinstance(storage, str) or not storage:
            files = _optuna_files(folder)
            if not files:
                raise ValueError(f"{str(folder / SUMMARY_FILE)!r} names no storage and the folder holds no study.db.")
            storage = storage_url(files[0])
        return SearchDir(folder, "optuna", SUMMARY_FILE, storage=_moved(folder, storage), study=study, summary=doc)
    if backend == "ray":
        exp = doc.get("experiment_path")
        experiments: tuple[Path, ...] = ()
        if isinstance(exp, str) and exp:
            p = Path(exp) if os.path.isabs(exp) else folder / exp
            for candidate in (p, folder / "ray_results" / p.name):
                if _is_experiment(candidate):
                    experiments = (candidate,)
                    break
        if not experiments:
            experiments = _ray_experiments(folder)
        if not experiments:
            raise PathNotFoundError(f"{str(folder / SUMMARY_FILE)!r} names the Ray experiment {exp!r}, but neither it "
                                    f"nor {str(folder / 'ray_results')!r} holds trial folders with params.json.")
        return SearchDir(folder, "ray", SUMMARY_FILE, study=study, experiments=experiments, summary=doc)
    return None  # a summary.json of another tool: look further


def resolve_search_dir(path: str | os.PathLike) -> SearchDir | None:
    """The search whose ``--out`` folder (or Ray experiment folder) is ``path``; None if it holds none.

    Raises:
        PathNotFoundError: ``path`` is not a folder.
        ValueError: an unreadable ``summary.json``, or one naming what is not there.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise PathNotFoundError(f"{str(folder)!r} is not a folder; give the --out folder of bnn-tune search.")
    if (folder / SUMMARY_FILE).is_file():
        found = _from_summary(folder, _read_json(folder / SUMMARY_FILE))
        if found is not None:
            return found
    files = _optuna_files(folder)
    if files:
        study = None
        if (folder / "best.json").is_file():  # the old Optuna backend's best trial names its study
            try:
                name = _read_json(folder / "best.json").get("study")
            except ValueError:
                name = None
            study = name if isinstance(name, str) else None
        return SearchDir(folder, "optuna", files[0].name, storage=storage_url(files[0]), study=study)
    experiments = _ray_experiments(folder)
    if experiments:
        return SearchDir(folder, "ray", "ray_results", experiments=experiments)
    return None
