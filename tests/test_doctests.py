"""Every ``>>>`` example in the package's docstrings runs and prints what it says.

The examples are documentation a user copies; one that no longer holds is a bug the other tests may miss
(a doctest in ``metrics.py`` showed the sub-epoch flip-rate bug before any test did).
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil
from pathlib import Path

import pytest

import bnn_tune


def _modules_with_examples() -> list[str]:
    root = Path(bnn_tune.__file__).parent
    names = []
    for info in pkgutil.walk_packages([str(root)], "bnn_tune."):
        rel = Path(*info.name.split(".")[1:])
        path = root / rel / "__init__.py" if info.ispkg else (root / rel).with_suffix(".py")
        if path.is_file() and ">>>" in path.read_text(encoding="utf-8"):
            names.append(info.name)
    return sorted(names)


MODULES = _modules_with_examples()


def test_the_package_has_examples_to_run():
    assert len(MODULES) >= 10, MODULES


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_hold(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False,
                             report=True)
    if result.attempted == 0:  # only examples marked +SKIP (they need Ray or a search run)
        assert "doctest: +SKIP" in (module.__doc__ or "") + "".join(
            getattr(v, "__doc__", None) or "" for v in vars(module).values()), f"{name}: no example was collected"
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} docstring examples failed (see above)"
