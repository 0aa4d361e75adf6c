"""``bnn-tune export`` and ``bnn-tune report`` take the ``--out`` folder of either backend of ``bnn-tune search``,
in the layout both write now (``summary.json`` naming backend, storage, experiment) and in the layouts of
earlier versions (Optuna: ``study.db`` + ``best.json``; Ray: ``ray_results/<name>`` + ``summary.json`` without
``backend``); one resolver (:func:`bnn_tune.search._outdir.resolve_search_dir`) reads them for both."""

from __future__ import annotations

import json

import pytest

from bnn_tune.cli import main
from bnn_tune.search._outdir import SearchDir, open_study, resolve_search_dir

optuna = pytest.importorskip("optuna")

CONFIG = {"dataset": "synthetic", "model": "mlp", "width": 0.125, "epochs": 2, "max_steps_per_epoch": 2,
          "batch_size": 32, "optimizer": "bop"}


def _optuna_study(url: str, name: str = "bop") -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=name, storage=url, direction="maximize")
    for seed, acc in ((1, 0.4), (2, 0.8)):
        trial = study.ask()
        trial.set_user_attr("bnn_tune:config", {**CONFIG, "seed": seed})
        trial.set_user_attr("bnn_tune:val_acc", [acc / 2, acc])
        trial.report(acc, 2)
        study.tell(trial, acc)


def _ray_experiment(exp) -> None:
    for name, seed, accs in (("trainable_a_00000", 1, [0.3, 0.5]), ("trainable_a_00001", 2, [0.4, 0.9])):
        tdir = exp / name
        tdir.mkdir(parents=True)
        (tdir / "params.json").write_text(json.dumps({**CONFIG, "seed": seed}))
        (tdir / "result.json").write_text("".join(json.dumps({"epoch": i + 1, "val_acc": a, "log_flip_rate": -3.0})
                                                  + "\n" for i, a in enumerate(accs)))


def _summary(out, **doc) -> None:
    (out / "summary.json").write_text(json.dumps({"best": {}, "trials": [], **doc}))


LAYOUTS = ("optuna", "ray", "optuna-old", "ray-old", "optuna-moved")


@pytest.fixture(params=LAYOUTS)
def layout(request, tmp_path):
    kind = request.param
    out = tmp_path / "run"
    out.mkdir()
    if kind.startswith("optuna"):
        _optuna_study(f"sqlite:///{out / 'study.db'}")
        if kind == "optuna":
            _summary(out, backend="optuna", study="bop", storage=f"sqlite:///{(out / 'study.db').resolve()}")
        elif kind == "optuna-old":
            (out / "best.json").write_text(json.dumps({"study": "bop", "trial": 1, "value": 0.8}))
        else:  # the folder was moved after the search: the summary's absolute storage path is gone
            _summary(out, backend="optuna", study="bop", storage=f"sqlite:///{tmp_path / 'elsewhere' / 'study.db'}")
    else:
        _ray_experiment(out / "ray_results" / "bop-ray")
        path = str((out / "ray_results" / "bop-ray").resolve())
        if kind == "ray":
            _summary(out, backend="ray", study="bop-ray", storage=None, experiment_path=path)
        else:
            _summary(out, experiment_path=path)
    return kind, out


def test_one_resolver_reads_either_backends_out_folder(layout):
    kind, out = layout
    found = resolve_search_dir(out)
    assert isinstance(found, SearchDir) and found.backend == kind.split("-")[0]
    assert found.found == ("study.db" if kind == "optuna-old" else "summary.json")
    if found.backend == "optuna":
        assert found.storage == f"sqlite:///{(out / 'study.db').resolve()}" and found.study == "bop"
        assert found.source().study_name == "bop"
    else:
        assert found.experiment_path == out / "ray_results" / "bop-ray"
        assert found.source() == str(out / "ray_results" / "bop-ray")


def test_export_and_report_take_either_backends_out_folder(layout, capsys):
    kind, out = layout
    assert main(["export", str(out), "--no-bench"]) == 0, capsys.readouterr().err
    text = capsys.readouterr().out
    assert ("exported trial 1 of optuna:bop" if kind.startswith("optuna") else "exported trial trainable_a_00001") in text
    config = json.loads((out / "export" / "config.json").read_text())  # the default --out: <out>/export
    assert config["seed"] == 2 and (out / "export" / "model.bnn.safetensors").is_file()
    assert main(["report", str(out)]) == 0
    page = (out / "report.html").read_text()
    assert ("Optuna study bop" if kind.startswith("optuna") else "Ray experiment bop-ray") in page


def test_a_summary_json_naming_a_storage_outside_the_folder(tmp_path, capsys):
    """``--storage`` elsewhere (e.g. a shared database): the folder holds only summary.json."""
    db = tmp_path / "shared" / "studies.db"
    db.parent.mkdir()
    url = f"sqlite:///{db}"
    _optuna_study(url, "a")
    _optuna_study(url, "b")
    out = tmp_path / "run"
    out.mkdir()
    _summary(out, backend="optuna", study="b", storage=url)
    found = resolve_search_dir(out)
    assert (found.storage, found.study) == (url, "b")
    assert main(["export", str(out), "--no-bench"]) == 0
    assert "exported trial 1 of optuna:b" in capsys.readouterr().out
    assert main(["report", str(out)]) == 0
    assert "Optuna study b" in (out / "report.html").read_text()


def test_resolver_order_and_refusals(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    assert resolve_search_dir(out) is None
    _ray_experiment(out / "ray_results" / "x")
    assert resolve_search_dir(out).backend == "ray"
    _optuna_study(f"sqlite:///{out / 'study.db'}")
    assert resolve_search_dir(out).backend == "optuna"  # study.db before ray_results
    _summary(out, backend="ray", experiment_path=str(out / "ray_results" / "x"))
    assert resolve_search_dir(out).backend == "ray"  # summary.json before study.db
    assert resolve_search_dir(out / "ray_results" / "x").experiments == (out / "ray_results" / "x",)
    _ray_experiment(out / "ray_results" / "y")
    (out / "summary.json").unlink()
    (out / "study.db").unlink()
    with pytest.raises(ValueError, match=r"holds 2 Ray experiments"):
        _ = resolve_search_dir(out).experiment_path  # an old folder with two: export asks which
    (out / "summary.json").write_text("{not json")
    with pytest.raises(ValueError, match="Cannot read .*summary.json"):
        resolve_search_dir(out)
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        resolve_search_dir(tmp_path / "missing")
    url = f"sqlite:///{tmp_path / 'two.db'}"
    _optuna_study(url, "a")
    _optuna_study(url, "b")
    with pytest.raises(ValueError, match=r"holds 2 studies: \['a', 'b'\]; choose one with --study"):
        open_study(url)
    assert open_study(url, "b").study_name == "b"
