"""A trial given a GPU by Ray trains on it; a trial without one trains on the CPU (needs an NVIDIA GPU)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import textwrap

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("ray.tune")
pytestmark = [
    pytest.mark.ray,
    pytest.mark.cuda,
    pytest.mark.timeout(300),
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU"),
]

_DRIVER = textwrap.dedent(
    """
    import json, sys
    import ray
    from ray import tune
    import bnn_tune

    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, _temp_dir=sys.argv[2], log_to_driver=False)
    space = {"dataset": "digits", "optimizer": "bop", "epochs": 2, "max_steps_per_epoch": 5}
    out = {}
    for label, fn in (("gpu", bnn_tune.with_resources(cpu=1, gpu=0.5)), ("cpu", bnn_tune.trainable)):
        results = tune.Tuner(fn, param_space={**space, "seed": tune.grid_search([0, 1])},
                             run_config=tune.RunConfig(name=label, storage_path=sys.argv[1], verbose=0)).fit()
        out[label] = [(r.metrics or {}).get("device") for r in results] + [str(r.error) for r in results if r.error]
    ray.shutdown()
    print("RESULT " + json.dumps(out))
    """
)


def test_trials_with_a_gpu_train_on_it(ray_env, tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(_DRIVER)
    temp_dir = tempfile.mkdtemp(prefix="bnngpu_")
    try:
        proc = subprocess.run([sys.executable, str(script), str(tmp_path / "storage"), temp_dir], env=ray_env,
                              capture_output=True, text=True, timeout=240)
    finally:
        shutil.rmtree(temp_dir, ignore_errors=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = json.loads(lines[-1][len("RESULT "):])
    assert out == {"gpu": ["cuda", "cuda"], "cpu": ["cpu", "cpu"]}
