"""``bnn-tune search`` answers a storage it cannot open with one ``error:`` line naming the URL (exit 2);
``make_storage`` raises ``ValueError`` with the same words."""

from __future__ import annotations

import pytest

pytest.importorskip("optuna")

from bnn_tune.cli import main  # noqa: E402
from bnn_tune.search.optuna import make_storage  # noqa: E402


@pytest.mark.parametrize("kind", ["missing driver", "unopenable database"])
def test_unreachable_storage_is_one_clear_error(kind, tmp_path, capsys):
    url = "postgresql://user@127.0.0.1:1/bnn" if kind == "missing driver" else f"sqlite:///{tmp_path}"
    code = main(["search", "--backend", "optuna", "--optimizer", "bop", "--samples", "1", "--epochs", "1",
                 "--storage", url, "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith(f"error: Cannot open the Optuna storage '{url}'") and "reachable" in err[0]
    with pytest.raises(ValueError, match="Cannot open the Optuna storage"):
        make_storage(url)
