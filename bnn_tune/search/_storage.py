"""Optuna storages from a URL or path: the one place ``--storage`` values are read (both backends).

* ``None`` or ``":memory:"``: in-memory (one process only);
* an RDB URL (``sqlite:///runs/NAME/study.db``, ``postgresql://...``, ``mysql://...``): Optuna's
  :class:`~optuna.storages.RDBStorage` (SQLite gets a 60 s lock timeout so several processes can share it);
* ``journal:///abs/path/study.log`` (``journal://relative/path.log`` is relative), or any path ending in
  ``.log`` / ``.journal``: :class:`~optuna.storages.JournalStorage` with a file backend.

Anything else raises ``ValueError`` naming the value and the accepted forms, before a file or folder is made
(``journal:/runs/j.log``, one slash, would otherwise be the relative path ``journal:/runs/j.log``). With
``create=False`` (reading a finished search: ``bnn-tune export``/``report``) a SQLite or journal file that
does not exist raises :class:`~bnn_tune._errors.PathNotFoundError` instead of being created empty.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from .._errors import PathNotFoundError
from .._imports import require

__all__ = ["ACCEPTED_FORMS", "make_storage", "storage_file"]

ACCEPTED_FORMS = ("':memory:', an RDB URL (sqlite:///path.db, postgresql://...), 'journal:///abs/path.log' "
                  "(journal://relative/path.log) or a path ending in .log/.journal")
"""The ``--storage`` values :func:`make_storage` takes, in words (for error messages)."""


def _bad(url: str, why: str = "") -> ValueError:
    return ValueError(f"`storage` must be {ACCEPTED_FORMS}, but got storage={url!r}{why}.")


def storage_file(url: str) -> tuple[str, Path] | None:
    """The local file a storage URL names: ``("sqlite" | "journal", path)``; None for an in-memory storage
    or a database server.

    Raises:
        ValueError: ``url`` is none of the accepted forms (module docstring), e.g. ``journal:/runs/j.log``.

    Example:
        >>> storage_file("journal://runs/j.log"), storage_file("postgresql://host/db")
        (('journal', PosixPath('runs/j.log')), None)
        >>> storage_file("journal:/runs/j.log")
        Traceback (most recent call last):
        ...
        ValueError: `storage` must be ':memory:', ... but got storage='journal:/runs/j.log' (a journal URL starts with 'journal://').
    """
    if url in (":memory:", "memory", ""):
        return None
    if url.startswith("journal:"):
        if not url.startswith("journal://"):
            raise _bad(url, " (a journal URL starts with 'journal://')")
        path = url[len("journal://"):]
        if not path:
            raise _bad(url, " (no file path after 'journal://')")
        return "journal", Path(path)
    if url.startswith("sqlite:") and not url.startswith("sqlite:///"):
        raise _bad(url, " (a SQLite URL starts with 'sqlite:///', three slashes)")
    if "://" not in url:
        if url.endswith((".log", ".journal")):
            if ":" in url.split("/")[0]:  # "sqlite:/x.log", "file:x.journal": a scheme, not a folder name
                raise _bad(url, f" ({url.split(':')[0]!r} looks like a URL scheme without '://')")
            return "journal", Path(url)
        raise _bad(url)
    if url.startswith("sqlite:///"):
        db = url[len("sqlite:///"):].split("?")[0]
        return None if db in ("", ":memory:") else ("sqlite", Path(db))
    return None


def make_storage(url: str | None, *, heartbeat_interval: int | None = None, grace_period: int | None = None,
                 max_retry: int = 2, create: bool = True) -> Any:
    """An Optuna storage object (or None for in-memory) from a URL or path (see module docstring).

    ``heartbeat_interval`` (seconds) turns on Optuna's heartbeat for RDB storages: a trial whose worker
    stopped beating for ``grace_period`` seconds is failed and retried up to ``max_retry`` times
    (``RetryFailedTrialCallback``). Ignored for journal and in-memory storages, which have no heartbeat.
    ``create=False`` opens an existing storage for reading: a SQLite or journal file that does not exist
    raises :class:`~bnn_tune._errors.PathNotFoundError` (nothing is created).
    """
    if url is None or url in (":memory:", "memory", ""):
        require("optuna", feature="bnn-tune search")
        return None
    if not isinstance(url, str):
        return url  # already a storage object
    local = storage_file(url)  # a malformed URL raises here, before optuna is imported or a folder made
    if local is not None and not create and not local[1].is_file():
        raise PathNotFoundError(f"No Optuna storage file at {str(local[1])!r} (storage={url!r}); check the path, "
                                "or give the --out folder of bnn-tune search.")
    optuna = require("optuna", feature="bnn-tune search")
    if local is not None and local[0] == "journal":
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        local[1].parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(local[1])))
    if "://" in url:
        kwargs: dict[str, Any] = {}
        if url.startswith("sqlite:///"):
            if local is not None:
                local[1].parent.mkdir(parents=True, exist_ok=True)
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
                return optuna.storages.RDBStorage(_with_installed_driver(url), **kwargs)
        except (SQLAlchemyError, ImportError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ValueError(f"Cannot open the Optuna storage {url!r}: {first} Check the URL, that the database "
                             "server is reachable and that its Python driver is installed (psycopg for "
                             "postgresql://: pip install 'bnn-tune[postgres]').") from exc
    raise _bad(url)  # storage_file accepts nothing else


def _with_installed_driver(url: str) -> str:
    """``postgresql://`` with the driver that is installed: SQLAlchemy 2.0 reads it as psycopg2, 2.1 as psycopg
    (3), which the ``postgres`` extra installs; an explicit ``postgresql+DRIVER://`` is kept.

    Example:
        >>> _with_installed_driver("sqlite:///s.db")
        'sqlite:///s.db'
    """
    import importlib.util

    for scheme in ("postgresql://", "postgres://"):
        if url.startswith(scheme) and importlib.util.find_spec("psycopg2") is None \
                and importlib.util.find_spec("psycopg") is not None:
            return "postgresql+psycopg://" + url[len(scheme):]
    return url
