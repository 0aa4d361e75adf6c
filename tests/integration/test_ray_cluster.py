"""A two-node Ray cluster on this machine (``ray.cluster_utils.Cluster``, 2 nodes x 1 CPU): the trials
of one experiment land on both nodes.

The cluster runs in a subprocess driver (its own Ray runtime, separate from the session fixture) with a
bounded wait, so a hang fails the test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("ray.tune")
pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]

_DRIVER = textwrap.dedent(
    """
    import json, sys
    import ray
    from ray import tune
    from ray.cluster_utils import Cluster
    import bnn_tune

    storage, temp_dir = sys.argv[1], sys.argv[2]
    cluster = Cluster(initialize_head=True,
                      head_node_args={"num_cpus": 1, "temp_dir": temp_dir, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes(timeout=60)
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        nodes = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
        tuner = tune.Tuner(
            bnn_tune.trainable,
            param_space={"dataset": "digits", "optimizer": "bop", "max_steps_per_epoch": 6, "width": 0.5,
                         "epochs": 3, "gamma": tune.grid_search([1e-3, 3e-3])},
            tune_config=tune.TuneConfig(metric="val_acc", mode="max", max_concurrent_trials=2),
            run_config=tune.RunConfig(name="two_nodes", storage_path=storage, verbose=0),
        )
        results = tuner.fit()
        trials = [{"node_id": r.metrics["node_id"], "epoch": r.metrics["epoch"], "val_acc": r.metrics["val_acc"],
                   "node_ip": r.metrics["node_ip"], "error": None if r.error is None else str(r.error)}
                  for r in results]
        print("RESULT " + json.dumps({"nodes": nodes, "trials": trials}))
    finally:
        ray.shutdown()
        cluster.shutdown()
    """
)


def test_trials_run_on_both_nodes_of_a_two_node_cluster(ray_env, tmp_path):
    script = tmp_path / "driver.py"
    script.write_text(_DRIVER)
    # the nodes' files and the cluster's ray_current_cluster go to this test's own RAY_TMPDIR, not /tmp/ray
    temp_dir = os.path.join(ray_env["RAY_TMPDIR"], "ray")
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "storage"), temp_dir], env=ray_env,
                          capture_output=True, text=True, timeout=240)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = json.loads(lines[-1][len("RESULT "):])
    assert len(out["nodes"]) == 2
    assert [t["error"] for t in out["trials"]] == [None, None]
    assert all(t["epoch"] == 3 for t in out["trials"])
    used = {t["node_id"] for t in out["trials"]}
    assert used == set(out["nodes"]), f"trials ran on {used}, cluster nodes are {out['nodes']}"
