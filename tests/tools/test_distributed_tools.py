"""tools/pg_server.py and tools/netns_hosts.py, without starting a server or making a namespace: the reasons they
give where they cannot run, the names they choose, and how the distributed tests skip (or fail under CI)."""

from __future__ import annotations

import pytest

from tests.conftest import REQUIRE_DISTRIBUTED, load_tool, skip_distributed


@pytest.fixture(scope="module")
def pg():
    return load_tool("pg_server")


@pytest.fixture(scope="module")
def netns():
    return load_tool("netns_hosts")


def test_pg_server_names_what_is_missing_and_the_fix(pg, monkeypatch):
    assert pg.find_program("no-such-postgres-program") is None
    monkeypatch.setattr(pg, "find_program", lambda name: None if name == "pg_ctl" else f"/bin/{name}")
    reason = pg.unavailable_reason()
    assert reason.startswith("PostgreSQL is not installed (pg_ctl not found") and "make system-deps" in reason
    with pytest.raises(RuntimeError, match="PostgreSQL is not installed"):
        pg.PostgresServer()


def test_pg_server_cli_without_a_server_is_one_error_line(pg, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(pg, "unavailable_reason", lambda: None)
    for action in ("url", "stop"):
        assert pg.main([action, "--dir", str(tmp_path / "none")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: no server in {tmp_path / 'none'}"), err
    monkeypatch.setattr(pg, "unavailable_reason", lambda: "PostgreSQL is not installed (...)")
    assert pg.main(["start", "--dir", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err.strip() == "error: PostgreSQL is not installed (...)"
    assert not (tmp_path / "x").exists()


def test_netns_names_fit_linux_interface_names(netns):
    for name in ("bnn", "bnn1234567", "bnn12345678", "a-much-longer-prefix-than-fits"):
        hosts = netns.TwoHosts(name)
        assert (hosts.head, hosts.worker) == (f"{name}-head", f"{name}-worker")
        assert all(len(v) <= 15 for v in (hosts.veth_head, hosts.veth_worker)), (hosts.veth_head, hosts.veth_worker)
        assert hosts.veth_head != hosts.veth_worker
    assert netns.TwoHosts("bnn").veth_head == "bnn-vh"
    # two long names get two pairs of interfaces (they are named in the machine's root namespace first)
    assert netns.TwoHosts("a-much-longer-prefix-1").veth_head != netns.TwoHosts("a-much-longer-prefix-2").veth_head
    commands = netns.TwoHosts("bnn").commands()
    assert commands[0] == ["ip", "netns", "add", "bnn-head"]
    assert ["ip", "-n", "bnn-head", "addr", "add", f"{netns.HEAD_IP}/24", "dev", "bnn-vh"] in commands
    assert ["ip", "-n", "bnn-worker", "addr", "add", f"{netns.WORKER_IP}/24", "dev", "bnn-vw"] in commands


def test_distributed_tests_skip_with_the_reason_or_fail_under_ci(monkeypatch):
    monkeypatch.delenv(REQUIRE_DISTRIBUTED, raising=False)
    with pytest.raises(pytest.skip.Exception, match="no server here"):
        skip_distributed("no server here")
    monkeypatch.setenv(REQUIRE_DISTRIBUTED, "1")
    with pytest.raises(pytest.fail.Exception, match=r"no server here \(BNN_TUNE_REQUIRE_DISTRIBUTED=1"):
        skip_distributed("no server here")
