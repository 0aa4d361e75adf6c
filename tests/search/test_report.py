"""bnn-tune report: an HTML page from a real small Optuna study, a Ray experiment dir and a bench.json."""

from __future__ import annotations

import base64
import json
import re

import pytest

from bnn_tune.cli import main
from bnn_tune.search.report import find_runs, load_ray_runs, write_report

optuna = pytest.importorskip("optuna")

BASE = {"dataset": "synthetic", "epochs": 5, "max_steps_per_epoch": 4, "width": 0.25, "optimizer": "latent_adam"}


def _space(trial):
    # latent_lr=1e-9 freezes the binary weights (log flip rate at the e^-9 floor): the flip-rate pruner
    # stops it; width=100 is out of range: the trial fails alone.
    return {"latent_lr": trial.suggest_categorical("latent_lr", [1e-2, 1e-3, 1e-9]),
            "width": trial.suggest_categorical("width", [0.25, 100.0])}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    import bnn_tune
    from bnn_tune.plugins.optuna import FlipRatePruner

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    d = tmp_path_factory.mktemp("run")
    study = optuna.create_study(study_name="bop-demo", storage=f"sqlite:///{d / 'study.db'}", direction="maximize",
                                pruner=FlipRatePruner(n_warmup_steps=1, patience=1))
    for params in ({"latent_lr": 1e-2, "width": 0.25}, {"latent_lr": 1e-3, "width": 0.25},
                   {"latent_lr": 1e-9, "width": 0.25}, {"latent_lr": 1e-3, "width": 100.0}):
        study.enqueue_trial(params)
    study.optimize(bnn_tune.objective(_space, base_config=BASE), n_trials=4)
    states = sorted(t.state.name for t in study.trials)
    assert states == ["COMPLETE", "COMPLETE", "FAIL", "PRUNED"], states

    # a Ray Tune experiment directory as bnn_tune.trainable + FlipRateStopper leave it (read as plain JSON)
    exp = d / "ray_results" / "exp"
    for name, accs, lfr, epochs, extra in (
        ("trainable_a_00000", [0.5, 0.7, 0.8], [-4.0, -4.5, -5.0], 3, {}),
        ("trainable_a_00001", [0.3, 0.31], [-6.0, -8.9], 3, {"stop_reason": "flip-collapse: collapsed"}),
        ("trainable_a_00002", [0.4], [-3.0], 3, {}),
        # the rule fired on the last planned epoch: nothing was cut short, so the trial completed
        ("trainable_a_00004", [0.6, 0.7, 0.75], [-5.0, -8.5, -8.9], 3, {"stop_reason": "flip-collapse: collapsed"}),
    ):
        t = exp / name
        t.mkdir(parents=True)
        (t / "params.json").write_text(json.dumps({**BASE, "epochs": epochs, "latent_lr": 1e-3}))
        rows = [{"epoch": i + 1, "training_iteration": i + 1, "val_acc": a, "log_flip_rate": f}
                for i, (a, f) in enumerate(zip(accs, lfr))]
        rows[-1].update(extra)
        (t / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (exp / "trainable_a_00003").mkdir()
    (exp / "trainable_a_00003" / "params.json").write_text(json.dumps({**BASE, "epochs": 3, "latent_lr": 1.0}))
    (exp / "trainable_a_00003" / "result.json").write_text("")
    (exp / "trainable_a_00003" / "error.txt").write_text("Traceback ...\nFloatingPointError: loss became NaN\n")

    # the benchmark of the export step (bnn-tune bench writes bench.json)
    from bnn_tune.export import benchmark_model

    res = benchmark_model("mlp", (1, 8, 8), width=0.125, quick=True, include_large_layer=False, batch_sizes=(1,))
    (d / "export").mkdir()
    (d / "export" / "bench.json").write_text(json.dumps(res))
    return d


def test_finds_optuna_ray_and_bench(run_dir):
    searches, benches = find_runs(run_dir)
    kinds = sorted((s.kind, s.name) for s in searches)
    assert kinds == [("optuna", "bop-demo"), ("ray", "exp")]
    study = next(s for s in searches if s.kind == "optuna")
    pruned = [t for t in study.trials if t.state == "PRUNED"]
    assert len(pruned) == 1 and pruned[0].params["latent_lr"] == 1e-9 and pruned[0].note
    assert pruned[0].log_flip_rate[-1] == pytest.approx(-9.0, abs=0.01)  # the collapse is in the series
    failed = next(t for t in study.trials if t.state == "FAIL")
    assert "width" in failed.note
    assert study.best().value == max(t.value for t in study.trials if t.state == "COMPLETE")
    assert [r.trial_id for r in study.ranked()][-1] == failed.trial_id
    assert len(benches) == 1 and benches[0].rows


def test_ray_states_from_result_files(run_dir):
    (run,) = load_ray_runs(run_dir)
    by = {t.trial_id[-1]: t for t in run.trials}
    assert by["0"].state == "COMPLETE" and by["0"].value == 0.8
    assert by["1"].state == "PRUNED" and "collapsed" in by["1"].note
    assert by["2"].state == "PRUNED" and "after epoch 1 of 3" in by["2"].note  # ASHA-style early stop
    assert by["3"].state == "FAIL" and "NaN" in by["3"].note
    assert by["4"].state == "COMPLETE" and by["4"].value == 0.75 and not by["4"].note
    assert run.searched_params() == ["latent_lr"]  # the only key that differs between trials


def test_html_report_has_sections_and_images(run_dir, tmp_path):
    out = tmp_path / "r.html"
    assert main(["report", str(run_dir), "--out", str(out), "--png-dir", str(tmp_path / "png")]) == 0
    page = out.read_text()
    for section in ("Ranking", "Flip-rate curves", "Accuracy curves", "Pruned vs completed",
                    "Kernel benchmark", "Optuna study bop-demo", "Ray experiment exp"):
        assert section in page, section
    assert "latent_lr" in page and "pruned" in page and "fail" in page
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    # optuna: flip, accuracy, outcomes (+ importance needs >= 2 completed with varying params: yes);
    # ray: flip, accuracy, outcomes; bench: 1
    assert len(images) == 8, len(images)
    for b64 in images:
        png = base64.b64decode(b64)
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert "http://" not in page and "https://" not in page  # self-contained: nothing to fetch
    assert len(list((tmp_path / "png").glob("*.png"))) == 8


def test_default_output_and_errors(run_dir, tmp_path, capsys):
    path = write_report(run_dir)
    assert path == run_dir / "report.html" and path.stat().st_size > 10_000
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert main(["report", str(run_dir), "--study", "nope", "--out", str(tmp_path / "x.html")]) == 2
    assert "No study named 'nope'" in capsys.readouterr().err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["report", str(empty)]) == 2  # nothing to report is an error, and nothing is written
    assert "Nothing to report in" in capsys.readouterr().err and list(empty.iterdir()) == []


def test_report_says_what_each_rule_saved(run_dir, tmp_path):
    from bnn_tune.search.report import stop_rule, stops_by_rule

    runs, _ = find_runs(run_dir)
    ray_run = next(r for r in runs if r.kind == "ray")
    # trial 1: the collapse stopper after epoch 2 of 3; trial 2: an ASHA-style stop after 1 of 3, no reason
    assert stops_by_rule(ray_run) == {"unrecorded": {"trials": 1, "epochs_trained": 1, "epochs_saved": 2},
                                      "flip-collapse": {"trials": 1, "epochs_trained": 2, "epochs_saved": 1}}
    optuna_run = next(r for r in runs if r.kind == "optuna")
    (rule,) = stops_by_rule(optuna_run)
    assert rule != "unrecorded"  # FlipRatePruner records its reason
    assert [stop_rule(n) for n in ("asha: SuccessiveHalvingPruner stopped it at step 3", "flip-band: log flip rate",
                                   "median: MedianPruner stopped it at step 2", "stopped early",
                                   "FlipRateStopper: an old run's prefix")] == [
        "asha", "flip-band", "median", "unrecorded", "unrecorded"]  # one format: "<rule>: <reason>"
    out = tmp_path / "r.html"
    assert main(["report", str(run_dir), "--out", str(out)]) == 0
    page = out.read_text()
    assert page.count("What each rule saved") == 2 and "<td class=\"l\">flip-collapse</td><td>1</td><td>2</td><td>1</td>" in page
