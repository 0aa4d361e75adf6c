"""Errors a user can fix, and their one-line form for the command line (lowest layer: imports nothing)."""

from __future__ import annotations

import errno

__all__ = ["PathNotFoundError", "DeviceUnavailableError", "USER_ERRORS", "user_message"]


class PathNotFoundError(FileNotFoundError, ValueError):
    """A file or folder the user named does not exist (dataset files under ``data_root`` with downloading
    off, an export source): a ``FileNotFoundError`` that is also a ``ValueError`` (a bad setting)."""


class DeviceUnavailableError(ValueError, RuntimeError):
    """A device was asked for that this machine does not have (``device='cuda'`` without a GPU).

    A ``ValueError`` (a bad setting the user can change) that is also a ``RuntimeError`` for callers
    written against the earlier type.
    """


# What the CLI answers with one ``error: ...`` line (exit 2) instead of a traceback: bad values and
# configs (ValueError, ConfigError, PackedFormatError, JSON errors), missing or unwritable files
# (OSError), missing optional dependencies (ImportError, whose message names the pip install).
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, OSError, ImportError)

_WRITE_ERRNOS = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST}


def user_message(exc: BaseException) -> str:
    """One line for ``exc``: its message, or for an OS error the file and what to do about it."""
    if isinstance(exc, OSError) and exc.filename is not None and exc.strerror:
        msg = f"{exc.strerror}: {exc.filename!r}"
        if exc.errno in _WRITE_ERRNOS:
            msg += "; choose a folder you can write to (--out) or fix its permissions."
        elif exc.errno == errno.ENOENT:
            msg += "; check the path."
        return msg
    text = str(exc).strip() or type(exc).__name__
    return " ".join(text.split())  # one line
