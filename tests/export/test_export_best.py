"""export_best against a fake Ray experiment directory and real Optuna studies; the export CLI."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from bnn_tune import Trainer
from bnn_tune.cli import main
from bnn_tune.export import export_best, load_packed

BASE = {"dataset": "synthetic", "model": "mlp", "width": 0.125, "epochs": 1, "max_steps_per_epoch": 3,
        "batch_size": 32}


def _checkpoint(path, **overrides) -> dict:
    t = Trainer({**BASE, **overrides})
    t.train_epoch()
    os.makedirs(path, exist_ok=True)
    t.save(os.path.join(path, "checkpoint.pt"))
    return t


@pytest.fixture(scope="module")
def fake_ray(tmp_path_factory) -> tuple[str, Trainer]:
    """Two trials laid out as Ray Tune writes them: params.json, result.json, checkpoint_NNNNNN/."""
    import shutil

    root = tmp_path_factory.mktemp("ray")
    exp = os.path.join(root, "exp")
    best = None
    for name, seed, accs in (("trial_a", 1, [0.3, 0.5]), ("trial_b", 2, [0.4, 0.9])):
        tdir = os.path.join(exp, name)
        os.makedirs(tdir)
        cfg = {**BASE, "seed": seed}
        with open(os.path.join(tdir, "params.json"), "w") as f:
            json.dump(cfg, f)
        with open(os.path.join(tdir, "result.json"), "w") as f:
            for i, a in enumerate(accs):
                f.write(json.dumps({"val_acc": a, "epoch": i + 1, "checkpoint_dir_name": f"checkpoint_{i:06d}"}) + "\n")
            f.write('{"val_acc": 0.99, "trunc')  # a trial killed mid-write
        t = _checkpoint(os.path.join(tdir, "checkpoint_000001"), seed=seed)
        shutil.copytree(os.path.join(tdir, "checkpoint_000001"), os.path.join(tdir, "checkpoint_000000"))
        if name == "trial_b":
            best = t
    return exp, best


def test_export_best_from_ray_dir(tmp_path, fake_ray):
    exp, best = fake_ray
    out = tmp_path / "out"
    summary = export_best(exp, out)
    assert summary["trial"] == "trial_b" and summary["value"] == 0.9
    assert summary["weights"] == "checkpoint" and summary["checkpoint"].endswith("checkpoint_000001/checkpoint.pt")
    for f in ("config.json", "model.bnn.safetensors", "bench.json", "bench.png", "export.json"):
        assert (out / f).is_file(), f
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["seed"] == 2
    pm = load_packed(out / "model.bnn.safetensors")
    x = best.data.x_test
    with torch.no_grad():
        best.model.eval()
        ref = best.model(x)
    assert (pm.predict(x, preprocessed=True) == ref.argmax(1).numpy()).all()
    np.testing.assert_allclose(pm.logits(x, preprocessed=True), ref.numpy(), rtol=1e-4, atol=1e-3)
    # the file carries the input transform: the raw test arrays give the same logits
    np.testing.assert_array_equal(pm.logits(best.data.x_test_raw), pm.logits(x, preprocessed=True))
    assert summary["agreement"] == 1.0 and summary["packed_test_acc"] == summary["torch_test_acc"]
    assert summary["packed_raw_test_acc"] == summary["packed_test_acc"]
    bench = json.loads((out / "bench.json").read_text())
    assert {r["scope"] for r in bench["rows"]} == {"layer", "model"}
    assert pm.header["model"]["trial"]["trial_id"] == "trial_b"


def test_exported_model_takes_raw_sklearn_digits(tmp_path):
    """The user's path: export a digits model, load it, call predict on sklearn's raw X (0..16)."""
    from sklearn.datasets import load_digits

    exp = tmp_path / "exp" / "trial_0"
    cfg = {**BASE, "dataset": "digits", "width": 0.5, "max_steps_per_epoch": 0, "seed": 0}
    exp.mkdir(parents=True)
    (exp / "params.json").write_text(json.dumps(cfg))
    (exp / "result.json").write_text(json.dumps({"val_acc": 0.9, "checkpoint_dir_name": "checkpoint_000000"}))
    t = _checkpoint(exp / "checkpoint_000000", **cfg)
    summary = export_best(str(tmp_path / "exp"), tmp_path / "out", bench=False)
    pm = load_packed(tmp_path / "out" / "model.bnn.safetensors")
    tr = pm.header["input_transform"]
    assert tr["raw_shape"] == [64] and tr["raw_dtype"] == "float64" and tr["input_shape"] == [1, 8, 8]
    assert len(tr["mean"]) == len(tr["std"]) == 64

    X, y = load_digits(return_X_y=True)
    assert X.max() == 16.0
    raw_pred = pm.predict(X)
    with torch.no_grad():
        t.model.eval()
        x_std = pm.input_transform(X)
        torch_pred = t.model(x_std).argmax(1).numpy()
    np.testing.assert_array_equal(raw_pred, torch_pred)  # same answers as PyTorch on the normalized data
    np.testing.assert_array_equal(raw_pred, pm.predict(x_std, preprocessed=True))
    assert (raw_pred == y).mean() > 0.85, (raw_pred == y).mean()
    assert summary["packed_raw_test_acc"] == summary["packed_test_acc"] > 0.85
    with pytest.raises(ValueError, match=r"raw inputs of shape \(N, 64\).*got shape \(5, 63\).*preprocessed=True"):
        pm.predict(X[:5, :63])
    with pytest.raises(ValueError, match=r"raw inputs of shape \(N, 64\)"):
        pm.predict(x_std)  # normalized images without preprocessed=True are refused, not misread


def test_export_takes_the_best_reports_checkpoint_not_the_latest(tmp_path):
    """scope="all": the checkpoint saved with the best report (epoch 1), not the latest one (epoch 2)
    whose weights differ; scope="last" and a result without checkpoint_dir_name take the latest."""
    tdir = tmp_path / "exp" / "trial_0"
    tdir.mkdir(parents=True)
    cfg = {**BASE, "seed": 3}
    (tdir / "params.json").write_text(json.dumps(cfg))
    t = Trainer(cfg)
    states = []
    for i in range(2):
        t.train_epoch()
        (tdir / f"checkpoint_00000{i}").mkdir()
        t.save(tdir / f"checkpoint_00000{i}" / "checkpoint.pt")
        states.append({k: v.clone() for k, v in t.model.state_dict().items()})
    assert any(not torch.equal(states[0][k], states[1][k]) for k in states[0])
    rows = [{"val_acc": 0.9, "checkpoint_dir_name": "checkpoint_000000"},
            {"val_acc": 0.5, "checkpoint_dir_name": "checkpoint_000001"}]
    (tdir / "result.json").write_text("\n".join(json.dumps(r) for r in rows) + "\n")

    def exported_logits(out, **kw):
        summary = export_best(str(tmp_path / "exp"), out, bench=False, **kw)
        pm = load_packed(out / "model.bnn.safetensors")
        return summary, pm.logits(t.data.x_test, preprocessed=True)

    def torch_logits(state):
        m = Trainer(cfg).model
        m.load_state_dict(state)
        with torch.no_grad():
            return m.eval()(t.data.x_test).numpy()

    best, logits = exported_logits(tmp_path / "best", scope="all")
    assert best["checkpoint"].endswith("checkpoint_000000/checkpoint.pt") and best["value"] == 0.9
    np.testing.assert_allclose(logits, torch_logits(states[0]), rtol=1e-4, atol=1e-3)
    assert not np.allclose(logits, torch_logits(states[1]), rtol=1e-4, atol=1e-3)
    last, logits = exported_logits(tmp_path / "last", scope="last")
    assert last["checkpoint"].endswith("checkpoint_000001/checkpoint.pt") and last["value"] == 0.5
    np.testing.assert_allclose(logits, torch_logits(states[1]), rtol=1e-4, atol=1e-3)
    # without checkpoint_dir_name in the result, the latest checkpoint is the fallback
    (tdir / "result.json").write_text("\n".join(json.dumps({"val_acc": r["val_acc"]}) for r in rows) + "\n")
    fallback, _ = exported_logits(tmp_path / "fallback", scope="all")
    assert fallback["checkpoint"].endswith("checkpoint_000001/checkpoint.pt")


def test_export_best_ray_scope_all(fake_ray):
    exp, _ = fake_ray
    from bnn_tune.export._best import find_best

    assert find_best(exp, scope="all").trial_id == "trial_b"
    assert find_best(exp, mode="min").trial_id == "trial_a"
    with pytest.raises(ValueError, match="`mode` must be 'max' or 'min'"):
        find_best(exp, mode="best")


def test_export_best_from_optuna_sqlite_with_checkpoint(tmp_path):
    optuna = pytest.importorskip("optuna")
    storage = f"sqlite:///{tmp_path / 'study.db'}"
    study = optuna.create_study(study_name="s", storage=storage, direction="maximize")
    for i, acc in enumerate([0.2, 0.8, 0.5]):
        trial = study.ask()
        cfg = {**BASE, "seed": i}
        trial.set_user_attr("bnn_tune:config", cfg)
        if i == 1:  # only the best trial needs real weights
            _checkpoint(tmp_path / "t1", seed=i)
        trial.set_user_attr("bnn_tune:checkpoint", str(tmp_path / f"t{i}" / "checkpoint.pt"))
        study.tell(trial, acc)
    out = tmp_path / "out"
    summary = export_best(storage, out, study_name="s", bench=False)
    assert summary["trial"] == "1" and summary["weights"] == "checkpoint"
    assert json.loads((out / "config.json").read_text())["seed"] == 1
    assert not (out / "bench.json").exists()
    with pytest.raises(ValueError, match="needs `study_name`"):
        export_best(storage, out)


def test_export_best_optuna_in_memory_retrains(tmp_path):
    optuna = pytest.importorskip("optuna")
    study = optuna.create_study(direction="maximize")
    trial = study.ask()
    trial.set_user_attr("bnn_tune:config", {**BASE, "seed": 5})
    study.tell(trial, 0.7)
    summary = export_best(study, tmp_path / "out", bench=False)
    assert summary["weights"] == "retrained" and summary["agreement"] == 1.0
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        export_best(study, tmp_path / "out2", bench=False, retrain=False)


def test_export_cli(tmp_path, capsys, fake_ray):
    exp, _ = fake_ray
    rc = main(["export", exp, "--out", str(tmp_path / "cli"), "--no-bench"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "trial_b" in out
    # every printed number is labelled (it was an unlabelled {"binary": 8192, "real": 41256})
    size = json.loads((tmp_path / "cli" / "export.json").read_text())["weight_bytes"]
    assert (f"packed model size: {size['binary']} bytes of binary weights (1 bit each), {size['real']} bytes of the "
            f"rest (real-valued layers, batch-norm, thresholds), {size['binary'] + size['real']} bytes in all") in out
    assert '"binary"' not in out and "{" not in out
    assert (tmp_path / "cli" / "model.bnn.safetensors").is_file()
    assert main(["export", str(tmp_path / "missing"), "--out", str(tmp_path / "x")]) == 2


def test_export_to_unwritable_folder_is_one_clear_error(tmp_path, capsys, fake_ray):
    exp, _ = fake_ray
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    out = blocker / "out"
    assert main(["export", exp, "--out", str(out), "--no-bench"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: Cannot write to the output folder") and f"out_dir='{out}'" in err
    assert "--out" in err and len(err.splitlines()) == 1
    with pytest.raises(ValueError, match="Cannot write to the output folder"):
        export_best(exp, out, bench=False)


def test_bad_source_type(tmp_path):
    with pytest.raises(TypeError, match="`source` must be"):
        export_best(42, tmp_path)


def test_only_a_study_has_both_best_trial_and_study_name():
    """An object with just one of an Optuna study's attributes (Ray's ExperimentAnalysis has a best_trial) is not
    read as a study."""
    from types import SimpleNamespace

    from bnn_tune.export._best import find_best

    for source in (SimpleNamespace(best_trial=object()), SimpleNamespace(study_name="s")):
        with pytest.raises(TypeError, match="`source` must be a Ray ResultGrid"):
            find_best(source)
