"""The one range check of the project: a bad number raises one ``ValueError`` in the house template.

"`patience` must be an integer >= 1, but got patience=0." -- every rule (``bnn_tune.plugins``), pruner and
scheduler validates its numeric settings through :func:`check_range`, so the wording and the edge cases
(``bool`` is not a number, NaN is never in range, a one-sided bound also asks for a finite value) are the
same everywhere. Lowest layer: imports nothing of the package.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["check_range"]


def _fmt(x: float) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def check_range(name: str, value: Any, low: float | None = None, high: float | None = None, *,
                low_open: bool = False, high_open: bool = False, integer: bool = False, none_ok: bool = False,
                what: str | None = None, error: type[ValueError] = ValueError) -> Any:
    """Return ``value`` if it is a number (an ``int`` with ``integer``) within the bounds, else raise.

    Args:
        name: the argument's name, as the user writes it.
        value: the value to check (``bool`` is refused: it is not a count or a rate).
        low, high: bounds (None: unbounded on that side); ``low_open``/``high_open`` exclude them.
        integer: ask for an ``int``.
        none_ok: ``None`` is allowed (and returned).
        what: what the value is, for the message (default "an integer" / "a finite number").
        error: the ``ValueError`` subclass to raise (e.g. ``ConfigError``).

    Raises:
        ValueError: (or ``error``) one sentence naming the value and the range it must be in.

    Example:
        >>> check_range("patience", 3, 1, integer=True)
        3
        >>> check_range("patience", 0, 1, integer=True)
        Traceback (most recent call last):
        ...
        ValueError: `patience` must be an integer >= 1, but got patience=0.
        >>> check_range("relative_drop", 1.5, 0, 1, low_open=True, high_open=True, none_ok=True)
        Traceback (most recent call last):
        ...
        ValueError: `relative_drop` must be in (0, 1) or None, but got relative_drop=1.5.
    """
    if value is None and none_ok:
        return None
    if low is not None and high is not None:
        rng = f"in {'(' if low_open else '['}{_fmt(low)}, {_fmt(high)}{')' if high_open else ']'}"
        must = f"{what or ('an integer' if integer else '')} {rng}".strip()
    else:
        kind = what or ("an integer" if integer else "a finite number")
        if low is not None:
            must = f"{kind} {'>' if low_open else '>='} {_fmt(low)}"
        elif high is not None:
            must = f"{kind} {'<' if high_open else '<='} {_fmt(high)}"
        else:
            must = kind
    ok = (not isinstance(value, bool) and isinstance(value, int if integer else (int, float))
          and math.isfinite(value)
          and (low is None or (value > low if low_open else value >= low))
          and (high is None or (value < high if high_open else value <= high)))
    if not ok:
        raise error(f"`{name}` must be {must}{' or None' if none_ok else ''}, but got {name}={value!r}.")
    return value
