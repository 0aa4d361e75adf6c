import subprocess
import sys


def test_import_bnn_tune_leaves_heavy_dependencies_out():
    code = (
        "import sys, bnn_tune, bnn_tune.nn, bnn_tune.optim, bnn_tune.data, bnn_tune.metrics, bnn_tune.cli;"
        "heavy = [m for m in ('ray', 'optuna', 'torchvision', 'matplotlib', 'mlxtend') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"import bnn_tune imported: {out.stdout.strip()}"


def test_require_names_the_extra():
    import pytest

    from bnn_tune._imports import require

    with pytest.raises(ImportError, match=r"pip install 'bnn-tune\[all\]'"):
        require("surely_not_a_module_xyz")
