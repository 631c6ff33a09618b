"""marlcov.deep.common: devices, seeding, configs from files, atomic resumable training state."""

import json
import random

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from marlcov.deep.common import (
    TrainingState,
    epoch_permutation,
    load_dataset_arrays,
    resolve_device,
    seed_everything,
    torch_generator,
)
from tests.deep.synthetic import write_argmax_reward_dataset

pytestmark = pytest.mark.deep


def test_resolve_device(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ValueError, match="cuda"):
        resolve_device("cuda")
    with pytest.raises(ValueError, match="device"):
        resolve_device("tpu")


def test_seed_everything_reproduces_all_generators():
    def draw():
        return random.random(), np.random.rand(), float(torch.rand(()))

    seed_everything(3)
    a = draw()
    seed_everything(3)
    assert draw() == a
    seed_everything(4)
    assert draw() != a
    with pytest.raises(ValueError, match="seed"):
        seed_everything(-1)


def test_the_config_helpers_that_lived_here_are_the_config_models():
    """One config reader: deep.common's old names are deep.config_model's functions, and
    save_config is refused naming what replaces it."""
    import marlcov.deep.common as common
    from marlcov.deep import config_model

    assert common.load_config is config_model.load_config and common.config_dict is config_model.config_values
    with pytest.raises(AttributeError, match="config_values"):
        common.save_config  # noqa: B018


def test_a_bad_value_of_a_stage_option_is_refused_naming_the_config_section(tmp_path, capsys):
    from marlcov.cli import main

    data = tmp_path / "d.h5"
    write_argmax_reward_dataset(data, n=8, horizon=2)
    code = main(["deep", "train-reference", str(data), "--out", str(tmp_path / "ref"), "--epochs", "-1", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 2 and "config section 'reference': epochs: expected" in err, err
    assert not (tmp_path / "ref").exists()


def test_training_state_round_trip_restores_everything(tmp_path):
    seed_everything(0)
    net = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(net.parameters(), lr=0.1)
    gen = torch_generator(5)
    net(torch.randn(4, 3)).sum().backward()
    opt.step()
    state = TrainingState(tmp_path / "s.pt", 2, {"net": net, "opt": opt}, {"g": gen}, {"a": 1})
    state.step, state.extra = 7, {"note": "x", "value": 1.5}
    state.save()
    expected = (random.random(), np.random.rand(), float(torch.rand(())), float(torch.rand((), generator=gen)))
    saved_weight = net.weight.detach().clone()

    seed_everything(99)
    net2 = torch.nn.Linear(3, 2)
    opt2 = torch.optim.Adam(net2.parameters(), lr=0.1)
    gen2 = torch_generator(123)
    state2 = TrainingState(tmp_path / "s.pt", 2, {"net": net2, "opt": opt2}, {"g": gen2}, {"a": 1})
    assert state2.load()
    assert state2.step == 7 and state2.extra == {"note": "x", "value": 1.5}
    assert torch.equal(net2.weight, saved_weight)
    assert opt2.state_dict()["state"][0]["step"] == opt.state_dict()["state"][0]["step"]
    got = (random.random(), np.random.rand(), float(torch.rand(())), float(torch.rand((), generator=gen2)))
    assert got == expected
    assert [p.name for p in tmp_path.iterdir()] == ["s.pt"]  # no temporary file left behind

    other = TrainingState(tmp_path / "s.pt", 2, {"net": net2}, config={"a": 2})
    with pytest.raises(ValueError, match=r"another config .*\['a'\]"):
        other.load()
    assert not TrainingState(tmp_path / "none.pt", 2, {"net": net2}).load()


def test_maybe_save_every_k_steps(tmp_path):
    state = TrainingState(tmp_path / "s.pt", 3, {"net": torch.nn.Linear(1, 1)})
    saved = []
    for _ in range(7):
        state.step += 1
        saved.append(state.maybe_save())
    assert saved == [False, False, True, False, False, True, False]


def test_epoch_permutation_depends_only_on_seed_and_epoch():
    a = epoch_permutation(50, 1, 3)
    assert np.array_equal(a, epoch_permutation(50, 1, 3))
    assert not np.array_equal(a, epoch_permutation(50, 1, 4))
    assert np.array_equal(np.sort(a), np.arange(50))


def test_load_dataset_arrays_matches_reader(tmp_path):
    path = write_argmax_reward_dataset(tmp_path / "d.h5", n=10)
    spec, arrays = load_dataset_arrays(path, ["obs", "actions", "source"], batch_size=3)
    assert spec.n_agents == 2 and arrays["obs"].shape == (10, 5, 2, 4)
    assert arrays["actions"].dtype == np.int16 and list(arrays["source"]) == ["synthetic"] * 10
    with pytest.raises(ValueError, match="unknown"):
        load_dataset_arrays(path, ["nope"])


def test_fit_records_block_means_and_a_resumed_run_records_the_same():
    """``fit`` with ``record_every = 4``: one record per 4 steps with the mean of each metric
    (the 2 steps after the last full block are not recorded); a run stopped after step 6, its
    partial sums in the checkpoint, continues to the same history."""
    from marlcov.deep.common import fit

    values = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0]
    net = torch.nn.Linear(1, 1)
    whole = fit(TrainingState(None, 0, {"net": net}), 10, lambda k: {"a": values[k]}, False, "t", record_every=4, step_key="update")
    assert whole == [{"update": 4, "a": 15.0 / 4}, {"update": 8, "a": 240.0 / 4}]
    assert fit(TrainingState(None, 0, {"net": net}), 3, lambda k: {"a": values[k]}, False, "t") == [{"a": 1.0}, {"a": 2.0}, {"a": 4.0}]


def test_fit_resumes_its_partial_sums(tmp_path):
    from marlcov.deep.common import fit

    values = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0]
    net = torch.nn.Linear(1, 1)

    def stop_at_6(k):
        if k == 6:
            raise KeyboardInterrupt
        return {"a": values[k]}

    with pytest.raises(KeyboardInterrupt):
        fit(TrainingState(tmp_path / "s.pt", 3, {"net": net}), 10, stop_at_6, False, "t", record_every=4, step_key="update")
    state = TrainingState(tmp_path / "s.pt", 3, {"net": net})
    assert state.load() and state.step == 6
    resumed = fit(state, 10, lambda k: {"a": values[k]}, False, "t", record_every=4, step_key="update")
    assert resumed == [{"update": 4, "a": 15.0 / 4}, {"update": 8, "a": 240.0 / 4}]
    assert not TrainingState(None, 3, {"net": net}).due() and TrainingState(None, 3, {"net": net}).save() is None
    with pytest.raises(ValueError, match="record_every"):
        fit(TrainingState(None, 0, {"net": net}), 1, lambda k: {}, False, "t", record_every=0)


@st.composite
def sparse_metric_runs(draw):
    """``record_every``, a number of steps and per step a dict of metrics, some of which only
    some steps return (as a delayed actor update does)."""
    every = draw(st.integers(2, 5))
    steps = draw(st.integers(every, 4 * every + 2))
    value = st.floats(-1e3, 1e3, allow_nan=False)
    produced = st.fixed_dictionaries({"always": value}, optional={"sometimes": value, "rarely": value})
    return every, draw(st.lists(produced, min_size=steps, max_size=steps))


@settings(max_examples=60, deadline=None)
@given(sparse_metric_runs())
def test_fit_averages_a_metric_over_the_steps_that_returned_it(run):
    from marlcov.deep.common import fit

    every, per_step = run
    net = torch.nn.Linear(1, 1)
    history = fit(
        TrainingState(None, 0, {"net": net}), len(per_step), lambda k: per_step[k], False, "t", record_every=every, step_key="update"
    )
    assert [r["update"] for r in history] == list(range(every, len(per_step) + 1, every))
    for record in history:
        block = per_step[record["update"] - every : record["update"]]
        names = {key for step in block for key in step}
        assert set(record) == names | {"update"}
        for key in names:
            produced = [step[key] for step in block if key in step]
            assert record[key] == pytest.approx(float(np.mean(produced)), rel=1e-12, abs=1e-9)


@settings(max_examples=30, deadline=None)
@given(run=sparse_metric_runs(), float32=st.booleans())
def test_tensor_metrics_give_the_history_of_float_metrics_and_resume_alike(run, float32, tmp_path_factory):
    """Step functions may return 0-dim tensors (summed on their device, read once per record):
    the history is that of the same metrics returned as Python floats, plain floats in the
    records, and a run stopped in the middle of a record resumes to it."""
    from marlcov.deep.common import fit

    every, per_step = run
    dtype = torch.float32 if float32 else torch.float64
    as_tensors = [{k: torch.tensor(v, dtype=dtype) for k, v in step.items()} for step in per_step]
    as_floats = [{k: float(t) for k, t in step.items()} for step in as_tensors]
    net = torch.nn.Linear(1, 1)
    expected = fit(TrainingState(None, 0, {"net": net}), len(per_step), lambda k: as_floats[k], False, "t", every, "update")
    got = fit(TrainingState(None, 0, {"net": net}), len(per_step), lambda k: as_tensors[k], False, "t", every, "update")
    assert got == expected and all(type(v) is float for r in got for k, v in r.items() if k != "update")
    stop = len(per_step) // 2
    path = tmp_path_factory.mktemp("fit") / "s.pt"

    def stopping(k):
        if k == stop:
            raise KeyboardInterrupt
        return as_tensors[k]

    with pytest.raises(KeyboardInterrupt):
        fit(TrainingState(path, 1, {"net": net}), len(per_step), stopping, False, "t", every, "update")
    state = TrainingState(path, 1, {"net": net})
    assert state.load() and state.step == stop
    assert fit(state, len(per_step), lambda k: as_tensors[k], False, "t", every, "update") == expected


def test_fit_resumes_the_partial_sums_of_a_checkpoint_of_the_former_layout():
    """A checkpoint whose partial sums are ``{metric: sum, "_n": steps}`` (every metric counted
    every step) continues to the history of an uninterrupted run."""
    from marlcov.deep.common import fit

    values = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0]
    state = TrainingState(None, 0, {"net": torch.nn.Linear(1, 1)})
    state.step = 6
    state.extra = {"history": json.dumps([{"update": 4, "a": 15.0 / 4}]), "fit_running": json.dumps({"a": 48.0, "_n": 2})}
    resumed = fit(state, 10, lambda k: {"a": values[k]}, False, "t", record_every=4, step_key="update")
    assert resumed == [{"update": 4, "a": 15.0 / 4}, {"update": 8, "a": 240.0 / 4}]


def test_a_requested_save_is_due_once(tmp_path):
    net = torch.nn.Linear(1, 1)
    state = TrainingState(tmp_path / "s.pt", 0, {"net": net})
    state.step = 1
    assert not state.due()
    state.request_save()
    assert state.due() and state.maybe_save() and (tmp_path / "s.pt").exists()
    assert not state.due()
