"""Sharded, resumable recording: shards deal the runs once each, a merge equals the unsharded table, an
interrupted shard resumes, and every refusal names the fix."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bnn_tune.hpobench import record
from bnn_tune.hpobench.record import (
    merge_shards,
    parse_shard,
    partial_path,
    record_shard,
    record_task,
    shard_runs,
)
from bnn_tune.hpobench.tasks import Task

TINY = Task("tiny_bop", "bop",
            base={"dataset": "synthetic", "model": "mlp", "width": 0.125, "batch_size": 64, "optimizer": "bop",
                  "epochs": 2, "max_steps_per_epoch": 3},
            grid={"gamma": (1e-3, 1e-1), "threshold": (0.0, 1e-6)}, seeds=(0, 1, 2))


def _read(path):
    with np.load(path, allow_pickle=False) as z:
        return json.loads(str(z["meta"])), {k: z[k] for k in z.files if k != "meta"}


def test_parse_shard():
    assert parse_shard("2/4") == (2, 4) and parse_shard(" 1 / 1 ") == (1, 1) and parse_shard((3, 3)) == (3, 3)
    for bad in ("0/4", "5/4", "2", "a/b", "1/0", "-1/2"):
        with pytest.raises(ValueError, match=r"`shard`.*shard="):
            parse_shard(bad)


@pytest.mark.parametrize("n", [1, 2, 5, 12, 13])
def test_shards_deal_every_run_exactly_once(n):
    runs = [r for i in range(1, n + 1) for r in shard_runs(4, 3, (i, n))]
    assert sorted(runs) == [(c, s) for c in range(4) for s in range(3)]
    sizes = [len(shard_runs(4, 3, (i, n))) for i in range(1, n + 1)]
    assert max(sizes) - min(sizes) <= 1  # balanced


def test_merged_shards_equal_the_unsharded_recording(tmp_path):
    whole = record_task(TINY, tmp_path / "whole", workers=2, command=["whole"])  # the process pool path too
    for i in (2, 1, 3):  # any order
        record_shard(TINY, tmp_path / "sharded", shard=(i, 3), command=[f"shard {i}"])
    merged = merge_shards(TINY, tmp_path / "sharded", command=["merge"])
    (m1, a1), (m2, a2) = _read(whole), _read(merged)
    assert sorted(a1) == sorted(a2) == sorted([*record.CURVES, "sub_flip_rate", "completed"])
    for k in a1:
        assert a1[k].dtype == a2[k].dtype and np.array_equal(a1[k], a2[k], equal_nan=k != "completed"), k
    assert a1["val_acc"].shape == (4, 3, 2) and np.isfinite(a1["val_acc"]).all()
    table_keys = ("task", "space", "base", "grid", "seeds", "epochs", "sub_epoch_points", "configs")
    assert {k: m1[k] for k in table_keys} == {k: m2[k] for k in table_keys}
    assert [s["command"] for s in m2["shards"]] == ["shard 1", "shard 2", "shard 3"]
    assert not list((tmp_path / "sharded" / "partial").glob("*.npz"))  # parts removed once merged
    from bnn_tune.hpobench import load

    t = load("tiny_bop", data_dir=tmp_path / "sharded")
    assert t.n_seeds == 3 and len(t.configs) == 4


def test_an_interrupted_shard_resumes_where_it_stopped(tmp_path, monkeypatch):
    real = record.record_run
    calls: list[tuple] = []

    def counting(task, params, seed):
        calls.append((params["gamma"], params["threshold"], seed))
        if len(calls) == 3:
            raise KeyboardInterrupt  # killed during its third run
        return real(task, params, seed)

    monkeypatch.setattr(record, "record_run", counting)
    with pytest.raises(KeyboardInterrupt):
        record_shard(TINY, tmp_path, shard=(1, 2))
    meta, part = _read(partial_path(tmp_path, "tiny_bop", (1, 2)))
    assert part["recorded"].sum() == 2 and meta["shard"] == [1, 2]
    calls.clear()
    monkeypatch.setattr(record, "record_run", real)
    monkeypatch.setattr(record, "record_run", lambda t, p, s: calls.append(s) or real(t, p, s))
    record_shard(TINY, tmp_path, shard=(1, 2))
    assert len(calls) == len(shard_runs(4, 3, (1, 2))) - 2  # only the runs not yet in the file
    with pytest.raises(ValueError, match=r"6 of 12 runs are not recorded yet \(shards 2/2 unfinished or missing\)"
                                         r".*--task tiny_bop --shard <i/n>"):
        merge_shards(TINY, tmp_path)
    record_shard(TINY, tmp_path, shard=(2, 2))
    assert merge_shards(TINY, tmp_path, keep_parts=True).is_file()
    assert len(list((tmp_path / "partial").glob("tiny_bop.shard-*.npz"))) == 2


def test_refusals_name_the_fix(tmp_path):
    record_shard(TINY, tmp_path, shard=(1, 4), limit=1)
    changed = Task(**{**TINY.__dict__, "seeds": (0, 1)})
    with pytest.raises(ValueError, match=r"shard-1-of-4\.npz was recorded from another definition.*delete it"):
        record_shard(changed, tmp_path, shard=(1, 4), limit=1)
    with pytest.raises(ValueError, match=r"shard-1-of-4\.npz was recorded from another definition.*tasks\.py"):
        merge_shards(changed, tmp_path)  # a task edited after its shards were recorded
    with pytest.raises(ValueError, match=r"No partial files of task 'other'.*--shard 1/N"):
        merge_shards(Task(**{**TINY.__dict__, "name": "other"}), tmp_path)
    held = Task(**{**TINY.__dict__, "held_out": True})
    with pytest.raises(ValueError, match=r"'tiny_bop' is held out.*--allow-held-out"):
        record_shard(held, tmp_path / "h", shard=(1, 1))
    with pytest.raises(ValueError, match=r"workers=0"):
        record_shard(TINY, tmp_path, shard=(1, 1), workers=0)


def test_progress_counts_every_run_and_the_meta_times_are_elapsed_times(tmp_path):
    import time

    seen = []
    t0 = time.time()
    path = record_shard(TINY, tmp_path, shard=(1, 3), command=["one"], on_run=lambda done, n, secs: seen.append((done, n)))
    elapsed = time.time() - t0
    n = len(shard_runs(4, 3, (1, 3)))
    assert seen == [(k, n) for k in range(1, n + 1)]  # 1-based: the last call says n of n
    meta, arrays = _read(path)
    assert 0.0 <= meta["wall_seconds"] <= elapsed + 0.1
    assert meta["run_seconds"] == pytest.approx(float(arrays["run_seconds"].sum()), abs=0.1)


def test_a_run_recorded_identically_by_two_shardings_merges(tmp_path):
    # "the parts may come from different shardings; a run recorded twice must be identical" (merge_shards):
    # 1/2 and 2/2 plus a re-run of 1/3 overlap on identical runs, which is fine
    for shard in ((1, 2), (2, 2), (1, 3)):
        record_shard(TINY, tmp_path, shard=shard)
    meta, arrays = _read(merge_shards(TINY, tmp_path, keep_parts=True))
    assert arrays["val_acc"].shape == (4, 3, 2) and len(meta["shards"]) == 3
