import json

from bnn_tune.cli import main, parse_assignments


def test_parse_assignments_uses_json_values():
    assert parse_assignments(["gamma=1e-4", "augment=false", "dataset=digits", "betas=[0.9,0.99]"]) == {
        "gamma": 1e-4, "augment": False, "dataset": "digits", "betas": [0.9, 0.99]}


def test_fit_command_prints_table(capsys):
    code = main(["fit", "--dataset", "synthetic", "--epochs", "2", "-p", "max_steps_per_epoch=3", "-p", "width=0.25"])
    out = capsys.readouterr().out
    assert code == 0
    assert "status=completed" in out and "val_acc" in out


def test_fit_command_json(capsys):
    code = main(["fit", "--dataset", "synthetic", "--epochs", "1", "-p", "max_steps_per_epoch=2", "--json"])
    result = json.loads(capsys.readouterr().out)
    assert code == 0 and result["status"] == "completed" and len(result["history"]) == 1


def test_fit_command_reports_config_errors(capsys):
    code = main(["fit", "-p", "gama=0.1"])
    captured = capsys.readouterr()
    assert code == 2
    assert "Unknown key 'gama'" in captured.out + captured.err


def test_fit_table_is_not_squeezed_when_piped(capsys, monkeypatch):
    """Piped (capsys is not a terminal) rich would fit the table into 80 columns: ``train_…``, ``9.139e-…``."""
    monkeypatch.setenv("COLUMNS", "80")
    code = main(["fit", "--dataset", "synthetic", "--epochs", "1", "-p", "max_steps_per_epoch=2", "-p", "width=0.25"])
    out = capsys.readouterr().out
    assert code == 0 and "…" not in out
    header = next(line for line in out.splitlines() if "train_loss" in line)
    for col in ("epoch", "train_loss", "train_acc", "val_loss", "val_acc", "flip_rate", "log_flip_rate", "time_s"):
        assert f" {col} " in header, header
    row = next(line for line in out.splitlines() if line.lstrip("│┃ ").startswith("1 "))
    assert "e-" in row or "e+" in row  # the flip rate in full, e.g. 2.861e-02
