"""The study that ``bnn-tune search --backend optuna`` writes is readable by optuna-dashboard.

The README tells users to run ``optuna-dashboard sqlite:///runs/NAME/study.db``; this test serves the same
storage through optuna-dashboard's WSGI app (what its server runs) and reads the JSON API the web page uses:
the study, every trial with its parameters, intermediate ``val_acc`` values and the flip-rate series.
"""

from __future__ import annotations

import json
from wsgiref.util import setup_testing_defaults

import pytest

pytest.importorskip("optuna")
optuna_dashboard = pytest.importorskip("optuna_dashboard")


def _get(app, path: str) -> dict:
    environ: dict = {}
    setup_testing_defaults(environ)
    environ.update(PATH_INFO=path, REQUEST_METHOD="GET")
    status: list[str] = []
    body = b"".join(app(environ, lambda s, headers, exc_info=None: status.append(s)))
    assert status and status[0].startswith("200"), (path, status, body[:500])
    return json.loads(body)


def test_search_storage_is_served_by_optuna_dashboard(tmp_path, capsys):
    from bnn_tune.cli import main

    out = tmp_path / "runs" / "bop"
    assert main(["search", "--backend", "optuna", "--optimizer", "bop", "--samples", "3", "--epochs", "2",
                 "--seed", "0", "--pruner", "none", "-p", "max_steps_per_epoch=3", "-p", "width=0.0625",
                 "--out", str(out)]) == 0  # every trial reports its epochs (a flip-early stop has none)
    url = f"sqlite:///{out / 'study.db'}"
    assert f"optuna-dashboard {url}" in capsys.readouterr().out  # the command the CLI prints

    app = optuna_dashboard.wsgi(url)
    (summary,) = _get(app, "/api/studies")["study_summaries"]
    assert summary["study_name"] == "bop" and summary["directions"] == ["maximize"]
    detail = _get(app, f"/api/studies/{summary['study_id']}")
    trials = detail["trials"]
    assert len(trials) == 3
    for t in trials:
        names = {p["name"] for p in t["params"]}
        assert {"gamma", "threshold"} <= names, names
        assert t["intermediate_values"], t  # per-epoch val_acc
        attrs = {a["key"] for a in t["user_attrs"]}
        assert "bnn_tune:log_flip_rate" in attrs, attrs
