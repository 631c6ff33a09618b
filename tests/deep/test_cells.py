"""marlcov.deep.cells: cells run inline, in local processes and as Ray tasks; existing results are
read back, failures name the cell. The cell function is ``builtins:dict`` (its keyword
arguments are its result), importable in any worker."""

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from marlcov.deep import cells as cells_module
from marlcov.deep.cells import RAY_AUTH_HINT, Cell, default_workers, run_cell, run_cells, threads_per_worker

REPO = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.deep


def cells(tmp_path, n=4):
    return [Cell(f"c{k}", "builtins:dict", {"value": k, "square": k * k}, str(tmp_path / f"c{k}" / "result.json")) for k in range(n)]


def strip(results):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in results]


def test_inline_run_writes_each_result_and_returns_them_in_order(tmp_path):
    lines = []
    out = run_cells(cells(tmp_path), workers=1, log=lines.append)
    assert strip(out) == [{"value": k, "square": k * k} for k in range(4)]
    for k in range(4):
        saved = json.loads((tmp_path / f"c{k}" / "result.json").read_text())
        assert saved["square"] == k * k and saved["seconds"] >= 0
    assert sum(line.startswith("[done]") for line in lines) == 4


def test_existing_results_are_read_back_not_recomputed(tmp_path):
    cs = cells(tmp_path)
    (tmp_path / "c2").mkdir()
    (tmp_path / "c2" / "result.json").write_text(json.dumps({"value": 2, "square": -1}))
    lines = []
    out = run_cells(cs, workers=1, log=lines.append)
    assert out[2] == {"value": 2, "square": -1}
    assert [line for line in lines if line.startswith("[skip]")] == [f"[skip] c2: {tmp_path / 'c2' / 'result.json'} exists"]


@pytest.mark.slow
def test_local_processes_and_ray_give_the_inline_results(tmp_path, ray_local):
    inline = strip(run_cells(cells(tmp_path / "a"), workers=1))
    assert strip(run_cells(cells(tmp_path / "b"), workers=2)) == inline
    assert strip(run_cells(cells(tmp_path / "c"), workers=2, ray_address="local")) == inline
    assert all((tmp_path / "c" / f"c{k}" / "result.json").exists() for k in range(4))


def test_a_failed_cell_is_named_and_the_others_are_kept(tmp_path):
    cs = cells(tmp_path, 2) + [Cell("bad", "math:sqrt", {"x": 4.0}, str(tmp_path / "bad.json"))]
    with pytest.raises(RuntimeError, match=r"1 cell\(s\) failed.*bad: TypeError"):
        run_cells(cs, workers=1)
    assert (tmp_path / "c0" / "result.json").exists() and not (tmp_path / "bad.json").exists()


def test_bad_cells_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="--workers"):
        run_cells(cells(tmp_path), workers=0)
    with pytest.raises(ValueError, match="duplicate keys"):
        run_cells(cells(tmp_path) + cells(tmp_path)[:1], workers=1)
    with pytest.raises(ValueError, match="module:function"):
        run_cell(Cell("x", "dict", {}, str(tmp_path / "x.json")))
    assert default_workers(1) == 1 and default_workers(10**6) >= 1


def sleeping_cell(pid_file: str, seconds: float) -> dict:
    """A cell that reports its process id, then sleeps (run by the worker-lifetime test)."""
    Path(pid_file).write_text(str(os.getpid()))
    time.sleep(seconds)
    return {}


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_exit_when_the_parent_is_killed(tmp_path):
    script = textwrap.dedent(f"""
        from marlcov.deep.cells import Cell, run_cells
        cells = [Cell(f"s{{k}}", "tests.deep.test_cells:sleeping_cell",
                      {{"pid_file": rf"{tmp_path}/pid{{k}}", "seconds": 300}}, rf"{tmp_path}/r{{k}}.json") for k in range(2)]
        run_cells(cells, workers=2, threads=1)
    """)
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=REPO)
    try:
        deadline = time.monotonic() + 120
        while not all((tmp_path / f"pid{k}").exists() for k in range(2)):
            assert time.monotonic() < deadline, "the workers did not start"
            assert parent.poll() is None, "the parent ended early"
            time.sleep(0.2)
        time.sleep(0.5)
        pids = [int((tmp_path / f"pid{k}").read_text()) for k in range(2)]
        assert all(_alive(pid) for pid in pids)
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 10 * cells_module.WATCHDOG_SECONDS + 5
    while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(pid) for pid in pids), "a worker outlived its killed parent"
    assert not any((tmp_path / f"r{k}.json").exists() for k in range(2))


def test_threads_per_worker_never_oversubscribes(monkeypatch):
    monkeypatch.setattr(cells_module, "available_cpus", lambda: 8)
    assert threads_per_worker(1) == 8 and threads_per_worker(2) == 4 and threads_per_worker(3) == 2
    assert threads_per_worker(16) == 1
    assert threads_per_worker(2, requested=2) == 2 and threads_per_worker(4, requested=3) == 2
    for workers in range(1, 12):
        for requested in (None, 1, 2, 5, 100):
            t = threads_per_worker(workers, requested)
            assert t >= 1 and (workers * t <= 8 or t == 1)


def test_an_explicit_thread_count_above_the_share_is_lowered_and_said(tmp_path, monkeypatch):
    monkeypatch.setattr(cells_module, "available_cpus", lambda: 2)
    seen = []
    monkeypatch.setattr(cells_module, "_local", lambda pending, n, threads, log: seen.append((n, threads)) or ({}, {}))
    lines = []
    with pytest.raises(KeyError):  # the stub computes nothing
        run_cells(cells(tmp_path, 2), workers=2, threads=2, log=lines.append)
    assert seen == [(2, 1)]
    assert any("--threads 2 lowered to 1 per worker" in line for line in lines)


@pytest.mark.slow
def test_training_gives_the_same_bits_with_one_or_two_threads():
    """marlcov.deep turns on MKL's strict reproducibility: the thread count does not change a run."""
    script = textwrap.dedent("""
        import hashlib, sys
        import marlcov.deep
        import torch
        from marlcov.deep.marlhf.vdn import OfflineVDNConfig, fit_offline_vdn
        g = torch.Generator().manual_seed(0)
        n, H, m, d = 256, 25, 3, 18
        obs = torch.randn(n, H + 1, m, d, generator=g)
        actions = torch.randint(0, 5, (n, H, m), generator=g)
        avail = torch.ones(n, H, m, 5, dtype=torch.bool)
        rewards = torch.randn(n, H, generator=g)
        from marlcov.deep.marlhf.reference import PolicyNet, behaviour_cloning_loss
        from marlcov.deep.marlhf.reward_model import RewardNet, reward_model_loss
        for threads in (1, 2):
            torch.set_num_threads(threads)
            net, _ = fit_offline_vdn(obs, actions, avail, rewards, OfflineVDNConfig(hidden=128, updates=60, progress=False), seed=0)
            torch.manual_seed(0)
            rm, ref = RewardNet(d, 5, m, "gru", 64, 3), PolicyNet(d, 5, m, 64, 3, "gru")
            opt = torch.optim.Adam([*rm.parameters(), *ref.parameters()], 1e-3)
            labels = torch.sign(torch.randn(n // 2, m, generator=torch.Generator().manual_seed(1)))
            for _ in range(10):  # the GRU reward model and the GRU reference
                r = rm(obs[:, :H], actions)
                loss = reward_model_loss(r[: n // 2], r[n // 2 :], labels, 1.0, 1.0).total + behaviour_cloning_loss(ref.log_probs(obs[:, :H]), actions)
                opt.zero_grad()
                loss.backward()
                opt.step()
            params = [*net.parameters(), *rm.parameters(), *ref.parameters()]
            print(hashlib.sha256(b"".join(p.detach().numpy().tobytes() for p in params)).hexdigest())
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("MKL_CBWR", "OMP_NUM_THREADS", "MKL_NUM_THREADS")}
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True, timeout=600, check=True)
    one, two = out.stdout.split()
    assert one == two


def test_ray_token_auth_failures_say_what_to_set(monkeypatch, tmp_path):
    ray = pytest.importorskip("ray")

    class AuthenticationError(Exception):
        pass

    def refuse(**kwargs):
        raise AuthenticationError("InvalidAuthToken: the token is missing")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", refuse)
    with pytest.raises(ValueError, match="--ray 10.0.0.1:6379: the Ray cluster refused") as info:
        run_cells(cells(tmp_path, 1), workers=1, ray_address="10.0.0.1:6379")
    assert "RAY_AUTH_TOKEN" in str(info.value) and "RAY_AUTH_MODE" in str(info.value)
    assert "RAY_AUTH_MODE" in RAY_AUTH_HINT
