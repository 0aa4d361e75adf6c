"""Optuna storages from a URL or path: the one place ``--storage`` values are read (both backends).

* ``None`` or ``":memory:"``: in-memory (one process only);
* an RDB URL (``sqlite:///runs/NAME/study.db``, ``postgresql://...``, ``mysql://...``): Optuna's
  :class:`~optuna.storages.RDBStorage` (SQLite gets a 60 s lock timeout so several processes can share it);
* ``journal:///abs/path/study.log`` (``journal://relative/path.log`` is relative), or any path ending in
  ``.log`` / ``.journal``: :class:`~optuna.storages.JournalStorage` with a file backend.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from .._imports import require

__all__ = ["make_storage"]


def make_storage(url: str | None, *, heartbeat_interval: int | None = None, grace_period: int | None = None,
                 max_retry: int = 2) -> Any:
    """An Optuna storage object (or None for in-memory) from a URL or path (see module docstring).

    ``heartbeat_interval`` (seconds) turns on Optuna's heartbeat for RDB storages: a trial whose worker
    stopped beating for ``grace_period`` seconds is failed and retried up to ``max_retry`` times
    (``RetryFailedTrialCallback``). Ignored for journal and in-memory storages, which have no heartbeat.
    """
    optuna = require("optuna", feature="bnn-tune search")
    if url is None or url in (":memory:", "memory", ""):
        return None
    if not isinstance(url, str):
        return url  # already a storage object
    if url.startswith("journal://") or url.endswith((".log", ".journal")):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        path = url[len("journal://"):] if url.startswith("journal://") else url
        if not path:
            raise ValueError(f"`storage` journal URL needs a file path, but got storage={url!r}.")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(path))
    if "://" in url:
        kwargs: dict[str, Any] = {}
        if url.startswith("sqlite:///"):
            db = url[len("sqlite:///"):]
            if db and db != ":memory:":
                Path(db).parent.mkdir(parents=True, exist_ok=True)
            kwargs["engine_kwargs"] = {"connect_args": {"timeout": 60}}
        if heartbeat_interval is not None:
            with warnings.catch_warnings():  # Optuna marks the heartbeat experimental; it is what we need
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
            kwargs.update(heartbeat_interval=heartbeat_interval, grace_period=grace_period,
                          heartbeat_stale_trial_callback=retry)
        from sqlalchemy.exc import SQLAlchemyError

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(url, **kwargs)
        except (SQLAlchemyError, ImportError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"Cannot open the Optuna storage {url!r}: {first} Check the URL, that the database "
                             "server is reachable and that its Python driver is installed (e.g. psycopg2 for "
                             "postgresql://).") from exc
    raise ValueError(
        f"`storage` must be ':memory:', an RDB URL (sqlite:///path.db, postgresql://...), 'journal:///path.log' "
        f"or a path ending in .log/.journal, but got storage={url!r}."
    )
