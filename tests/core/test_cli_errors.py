"""User mistakes get one line ``error: ...`` (exit 2) from every command, and the same words from the
Python API as ``ConfigError``/``ValueError``; ``--debug`` shows the traceback."""

from __future__ import annotations

import pytest
import torch

from bnn_tune.cli import main


def _error_line(capsys, argv) -> str:
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 2, (code, captured)
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), captured.err
    assert "Traceback" not in captured.out + captured.err
    return lines[0]


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_missing_config_file(capsys, tmp_path):
    from bnn_tune.config import ConfigError, load_config_file

    path = tmp_path / "nope.json"
    line = _error_line(capsys, ["fit", "--config", str(path)])
    assert f"Config file '{path}' does not exist; check the --config path." in line
    with pytest.raises(ConfigError, match="does not exist; check the --config path"):
        load_config_file(path)


def test_invalid_config_json_names_line_and_column(capsys, tmp_path):
    from bnn_tune.config import ConfigError, load_config_file

    path = tmp_path / "bad.json"
    path.write_text('{"epochs": 2,\n "model": mlp}\n')
    line = _error_line(capsys, ["fit", "--config", str(path)])
    assert "is not valid JSON: Expecting value at line 2 column 11." in line
    with pytest.raises(ConfigError, match="at line 2 column 11"):
        load_config_file(path)
    path.write_text("[1, 2]")
    assert "must hold a JSON object" in _error_line(capsys, ["fit", "--config", str(path)])


def test_bad_param_syntax(capsys):
    assert "-p expects KEY=VALUE, but got 'gamma'" in _error_line(capsys, ["fit", "-p", "gamma"])


def test_torchvision_files_absent(capsys, tmp_path):
    pytest.importorskip("torchvision")
    from bnn_tune.data import load_dataset

    root = tmp_path / "empty"
    line = _error_line(capsys, ["fit", "--dataset", "mnist", "-p", f"data_root={root}"])
    assert f"data_root='{root}'" in line and "-p download=true" in line
    with pytest.raises(ValueError, match=r"not under data_root=.*download=True"):
        load_dataset("mnist", root=str(root), cache=False)


def test_device_cuda_without_gpu(capsys, no_gpu):
    from bnn_tune import Trainer

    line = _error_line(capsys, ["fit", "--device", "cuda", "--dataset", "synthetic"])
    assert "device='cuda' was asked for, but no CUDA GPU is visible" in line and "--device cpu" in line
    with pytest.raises(ValueError, match="no CUDA GPU is visible"):
        Trainer({"dataset": "synthetic", "device": "cuda"})
    line = _error_line(capsys, ["bench", "--device", "cuda", "--model", "mlp", "--quick"])
    assert "no CUDA GPU" in line


def test_debug_shows_the_traceback(no_gpu):
    from bnn_tune._errors import DeviceUnavailableError

    with pytest.raises(DeviceUnavailableError):
        main(["fit", "--device", "cuda", "--dataset", "synthetic", "--debug"])
    with pytest.raises(DeviceUnavailableError):
        main(["--debug", "fit", "--device", "cuda", "--dataset", "synthetic"])


def test_export_source_missing(capsys, tmp_path):
    from bnn_tune.export import export_best

    src = tmp_path / "no-such-run"
    line = _error_line(capsys, ["export", str(src), "--out", str(tmp_path / "out")])
    assert f"No such folder '{src}'; give the --out folder of bnn-tune search" in line and "--study" in line
    with pytest.raises(ValueError, match="No Ray Tune experiment directory"):
        export_best(str(src), tmp_path / "out")


def test_unwritable_output_folder(capsys, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    line = _error_line(capsys, ["bench", "--model", "mlp", "--quick", "--out", str(blocker / "sub")])
    assert f"'{blocker / 'sub'}'" in line and "choose a folder you can write to" in line
    line = _error_line(capsys, ["report", str(tmp_path / "missing")])
    assert "is not a directory" in line


def _tree(root) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def test_bench_of_a_model_without_packed_form_is_refused_before_anything_is_written(capsys, tmp_path):
    """binarynet_paper (zero padding of binarized inputs, batch norm without scale) has no packed form."""
    from bnn_tune.export import randomize_model
    from bnn_tune.nn import build_model

    model = randomize_model(build_model("binarynet_paper", (3, 16, 16), 4, width=0.0625))  # BN weight is None
    assert not model.training
    line = _error_line(capsys, ["bench", "--model", "binarynet_paper", "--quick", "--out", str(tmp_path / "b")])
    assert "Model 'binarynet_paper' has no packed form, so there is nothing to benchmark" in line
    assert "zeros" in line and "'binarynet'" in line
    assert _tree(tmp_path) == []  # no --out folder, no bench.json


def test_export_of_an_unknown_study_names_the_studies(capsys, tmp_path):
    optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"sqlite:///{tmp_path / 'study.db'}"
    optuna.create_study(study_name="bop", storage=url)
    line = _error_line(capsys, ["export", url, "--study", "nope", "--out", str(tmp_path / "out")])
    assert line == f"error: No study named 'nope' in '{url}'. Available: ['bop']; choose one with --study."
    assert not (tmp_path / "out").exists()
    from bnn_tune.export import export_best

    with pytest.raises(ValueError, match=r"No study named 'nope'.*Available: \['bop'\]"):
        export_best(url, tmp_path / "out", study_name="nope")


def test_export_of_a_missing_database_creates_nothing(capsys, tmp_path, monkeypatch):
    pytest.importorskip("optuna")
    from bnn_tune.export import export_best

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    line = _error_line(capsys, ["export", "sqlite:///runs/nothere.db", "--study", "x", "--out", "out"])
    assert "No Optuna storage file at 'runs/nothere.db'" in line
    with pytest.raises(ValueError, match="No Optuna storage file at 'runs/nothere.db'"):
        export_best("sqlite:///runs/nothere.db", "out", study_name="x")
    assert _tree(tmp_path) == ["runs"]  # no empty nothere.db, no out/


def test_export_and_report_of_a_folder_without_a_search_say_what_they_looked_for(capsys, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    line = _error_line(capsys, ["report", str(empty)])
    assert line.startswith(f"error: Nothing to report in '{empty}': looked for summary.json, study.db")
    assert "ray_results" in line and "bench.json" in line
    line = _error_line(capsys, ["export", str(empty)])
    assert line.startswith(f"error: Nothing to export in '{empty}': looked for summary.json, study.db")
    assert _tree(tmp_path) == ["empty"]  # no report.html, no export/
