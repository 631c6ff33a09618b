"""Datasets in other people's layouts read in place: flashbax vaults written by flashbax itself,
OMIGA and O-MAPL HDF5 files; episodes, padding, returns and refusals against the raw arrays."""

from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from marlcov.deep.common import step_masks
from marlcov.deep.data.external import OmaplReader, is_continuous, open_dataset
from marlcov.deep.data.hdf5 import DatasetReader, DatasetWriter, read_pairs, write_pairs_file
from marlcov.deep.data.preferences import label_dataset
from marlcov.deep.data.schema import DatasetSpec, TrajectoryBatch
from marlcov.deep.data.vaults import OmigaReader, VaultReader

fbx = pytest.importorskip("flashbax")
import jax.numpy as jnp  # noqa: E402
from flashbax.buffers.trajectory_buffer import TrajectoryBufferState  # noqa: E402
from flashbax.vault import Vault  # noqa: E402

pytestmark = pytest.mark.deep

OBS_DIM = 3
STATE_DIM = 4
#: One float32 value carried through storage and back.
F32_ATOL = 1e-6
HYPOTHESIS = settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@st.composite
def flat_layouts(draw, rows_max: int = 2):
    """Rows of consecutive episodes (lengths drawn), trailing unfinished steps, sizes and flags."""
    B = draw(st.integers(1, rows_max))
    m = draw(st.integers(1, 3))
    rows = [draw(st.lists(st.integers(1, 6), min_size=1, max_size=4)) for _ in range(B)]
    trailing = [draw(st.integers(0, 3)) for _ in range(B)]
    T = max(sum(r) + t for r, t in zip(rows, trailing))
    return {
        "B": B,
        "m": m,
        "rows": rows,
        "T": T,
        "A": draw(st.integers(2, 5)),
        # seeds only the payload that the reader copies (observations, rewards, which agent flags the end); the layout is drawn
        "seed": draw(st.integers(0, 2**16)),
        "team_reward": draw(st.booleans()),
        "legals": draw(st.booleans()),
        "state": draw(st.booleans()),
        "truncate": draw(st.lists(st.booleans(), min_size=24, max_size=24)),
    }


def raw_arrays(lay):
    """The raw step arrays of a layout and its expected episodes ``(row, start, length)``."""
    B, T, m, A = lay["B"], lay["T"], lay["m"], lay["A"]
    rng = np.random.default_rng(lay["seed"])
    terminals = np.zeros((B, T, m), bool)
    truncations = np.zeros((B, T, m), bool)
    episodes, k = [], 0
    for b, lengths in enumerate(lay["rows"]):
        start = 0
        for L in lengths:
            end = start + L - 1
            flags = truncations if lay["truncate"][k % 24] else terminals
            flags[b, end, rng.integers(0, m)] = True  # one agent's flag ends the episode
            episodes.append((b, start, L))
            start, k = end + 1, k + 1
    legals = rng.random((B, T, m, A)) < 0.7
    legals[..., 0] = True
    data = {
        "observations": rng.normal(size=(B, T, m, OBS_DIM)).astype(np.float32),
        "actions": rng.integers(0, A, (B, T, m)).astype(np.int32),
        "rewards": rng.normal(size=(B, T) if lay["team_reward"] else (B, T, m)).astype(np.float32),
        "terminals": terminals,
        "truncations": truncations,
        "infos": {},
    }
    if lay["legals"]:
        data["infos"]["legals"] = legals
    if lay["state"]:
        data["infos"]["state"] = rng.normal(size=(B, T, STATE_DIM)).astype(np.float32)
    if not data["infos"]:
        del data["infos"]
    return data, episodes


def write_vault(root, uid: str, data) -> None:
    import jax

    experience = jax.tree.map(jnp.asarray, data)
    vault = Vault("data.vlt", experience_structure=experience, rel_dir=str(root), vault_uid=uid)
    T = data["actions"].shape[1]
    vault.write(TrajectoryBufferState(experience=experience, current_index=jnp.asarray(T), is_full=jnp.asarray(False)))


def per_agent(r, m):
    return r if r.ndim == 3 else np.repeat(r[..., None], m, axis=-1)


def check_against_raw(reader, data, episodes, m):
    obs, acts = data["observations"], data["actions"]
    rew = per_agent(data["rewards"], m)
    assert len(reader) == len(episodes)
    H = max(L for _, _, L in episodes)
    assert reader.spec.horizon == H and reader.spec.n_agents == m
    d = reader.read_fields(slice(None))
    valid, _ = step_masks(d["avail"])
    np.testing.assert_array_equal(valid.sum(axis=1), [L for _, _, L in episodes])
    expected_returns = np.array([rew[b, s : s + L].astype(np.float64).sum(axis=0) for b, s, L in episodes])
    np.testing.assert_allclose(reader.returns(), expected_returns, atol=F32_ATOL * H)
    for n, (b, s, L) in enumerate(episodes):
        np.testing.assert_array_equal(d["actions"][n, :L], acts[b, s : s + L])
        assert (d["actions"][n, L:] == 0).all() and (d["rewards"][n, L:] == 0).all()
        np.testing.assert_array_equal(d["obs"][n, :L], obs[b, s : s + L])
        np.testing.assert_array_equal(d["obs"][n, L:], np.broadcast_to(obs[b, s + L - 1], d["obs"][n, L:].shape))
    return d


@HYPOTHESIS
@given(lay=flat_layouts())
def test_vault_episodes_are_the_raw_steps_cut_at_done_flags(tmp_path_factory, lay):
    root = tmp_path_factory.mktemp("vault")
    data, episodes = raw_arrays(lay)
    write_vault(root, "Good", data)
    with open_dataset(root / "data.vlt") as reader:
        assert isinstance(reader, VaultReader)
        d = check_against_raw(reader, data, episodes, lay["m"])
        assert reader.dropped_steps == sum(lay["T"] - sum(r) for r in lay["rows"])
        for n, (b, s, L) in enumerate(episodes):
            if lay["legals"]:
                np.testing.assert_array_equal(d["avail"][n, :L], data["infos"]["legals"][b, s : s + L])
            if lay["state"]:
                np.testing.assert_array_equal(d["state"][n, :L], data["infos"]["state"][b, s : s + L])
        order = np.random.default_rng(lay["seed"]).permutation(len(reader))
        shuffled = reader.read_fields(order, ["obs", "actions", "avail"])
        for name in ("obs", "actions", "avail"):
            np.testing.assert_array_equal(shuffled[name], d[name][order])


#: Two rows of complete episodes (five in all) with legal-action masks and a global state.
TWO_ROWS = {
    "B": 2,
    "m": 2,
    "rows": [[3, 5, 2], [4, 4]],
    "T": 10,
    "A": 4,
    "legals": True,
    "state": True,
    "truncate": [False] * 24,
}


def test_vault_labels_and_pairs_file_round_trip(tmp_path):
    lay = {**TWO_ROWS, "seed": 3, "team_reward": True}
    data, episodes = raw_arrays(lay)
    write_vault(tmp_path, "Good", data)
    with open_dataset(tmp_path / "data.vlt" / "Good") as reader:
        pairs = label_dataset(reader, pairs_per_trajectory=4, steepness=5.0, seed=1)
        out = write_pairs_file(tmp_path / "labels.pairs.h5", pairs, reader)
        back = read_pairs(out, reader)
        np.testing.assert_array_equal(back.labels, pairs.labels)
        assert len(back) == 4 * len(episodes)
        batch = reader.read(np.arange(len(reader)))
        assert isinstance(batch, TrajectoryBatch) and (batch.seed == -1).all()
    with open_dataset(tmp_path / "data.vlt" / "Good") as again:
        assert again.uuid == reader.uuid  # the same data keep their pairs file


@HYPOTHESIS
@given(lay=flat_layouts(rows_max=1), continuous=st.booleans())
def test_omiga_file_is_read_as_episodes(tmp_path_factory, lay, continuous):
    data, episodes = raw_arrays(lay)
    m, T = lay["m"], lay["T"]
    rng = np.random.default_rng(lay["seed"] + 1)
    done = (data["terminals"] | data["truncations"]).any(axis=2)[0]
    path = tmp_path_factory.mktemp("omiga") / "Ant-v2-2x4-expert.hdf5"
    actions = rng.uniform(-1, 1, (T, m, 2)).astype(np.float32) if continuous else data["actions"][0]
    with h5py.File(path, "w") as f:
        f["o"], f["s"], f["a"] = data["observations"][0], rng.normal(size=(T, m, STATE_DIM)), actions
        f["r"] = per_agent(data["rewards"], m)[0, :, :1]  # the release stores one team reward [T, 1]
        f["d"] = done[:, None].astype(np.float32)
    team = dict(data, rewards=data["rewards"] if data["rewards"].ndim == 2 else data["rewards"][..., 0])
    if continuous:
        team = dict(team, actions=actions[None])
    with open_dataset(path) as reader:
        assert isinstance(reader, OmigaReader)
        assert is_continuous(reader.spec) == continuous
        if continuous:
            d = reader.read_fields(slice(None), ["actions", "avail"])
            assert d["actions"].dtype == np.float32 and d["avail"].shape[-1] == 1
            for n, (_, s, L) in enumerate(episodes):
                np.testing.assert_array_equal(d["actions"][n, :L], actions[s : s + L])
        else:
            check_against_raw(reader, team, episodes, m)
        assert reader.spec.state_dim == m * STATE_DIM


def write_omapl(path, P=5, T=6, m=2, A=4, seed=0, drop=()):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, T + 1, (2, P))
    with h5py.File(path, "w") as f:
        for k, side in enumerate("xy"):
            dones = np.zeros((P, T), np.float32)
            dones[np.arange(P), lengths[k] - 1] = 1
            f[f"obs_{side}"] = rng.normal(size=(P, T + 1, m, OBS_DIM)).astype(np.float32)
            f[f"states_{side}"] = rng.normal(size=(P, T + 1, STATE_DIM)).astype(np.float32)
            f[f"actions_{side}"] = rng.integers(0, A, (P, T, m))
            f[f"avails_{side}"] = np.ones((P, T + 1, m, A), bool)
            f[f"rewards_{side}"] = rng.normal(size=(P, T)).astype(np.float32)
            f[f"dones_{side}"] = dones
        f["labels"] = rng.integers(0, 2, P).astype(np.float32)
        for name in drop:
            del f[name]
    return lengths


def test_omapl_pairs_come_from_the_file(tmp_path):
    P, T, m = 5, 6, 2
    path = tmp_path / "5m_vs_6m.h5"
    lengths = write_omapl(path, P, T, m)
    with h5py.File(path, "r") as f:
        raw = {k: f[k][()] for k in f}
    with open_dataset(path) as reader:
        assert isinstance(reader, OmaplReader) and len(reader) == 2 * P and reader.has_pairs()
        pairs = reader.pairs()
        np.testing.assert_array_equal(pairs.first, np.arange(P))
        np.testing.assert_array_equal(pairs.second, P + np.arange(P))
        np.testing.assert_array_equal(pairs.labels[:, 0], np.where(raw["labels"] == 1, 1, -1))
        assert (pairs.labels == pairs.labels[:, :1]).all()
        d = reader.read_fields([P + 1, 0], ["avail", "rewards", "actions"])
        valid, _ = step_masks(d["avail"])
        np.testing.assert_array_equal(valid.sum(axis=1), [lengths[1, 1], lengths[0, 0]])
        expected = [raw["rewards_y"][1, : lengths[1, 1]].sum(), raw["rewards_x"][0, : lengths[0, 0]].sum()]
        np.testing.assert_allclose(d["rewards"][:, :, 0].sum(axis=1), expected, atol=F32_ATOL * T)
        np.testing.assert_array_equal(d["actions"][1, : lengths[0, 0]], raw["actions_x"][0, : lengths[0, 0]])


def test_marlcov_files_open_as_themselves(tmp_path):
    spec = DatasetSpec("simple_spread_v3", {}, ("a", "b"), 2, 3, 4, 2)
    rng = np.random.default_rng(0)
    batch = TrajectoryBatch(
        rng.normal(size=(3, 3, 2, 2)),
        rng.normal(size=(3, 3, 3)),
        rng.integers(0, 4, (3, 2, 2)),
        np.ones((3, 2, 2, 4), bool),
        rng.normal(size=(3, 2, 2)),
        np.arange(3),
    )
    with DatasetWriter(tmp_path / "d.h5", spec) as w:
        w.append(batch)
    with open_dataset(tmp_path / "d.h5") as reader:
        assert isinstance(reader, DatasetReader)


def test_unknown_or_broken_layouts_are_refused_naming_file_and_field(tmp_path):
    with pytest.raises(ValueError, match="no such file or directory"):
        open_dataset(tmp_path / "absent")
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f["observations"] = np.zeros((2, 3))
    with pytest.raises(ValueError, match=r"other.h5: unknown HDF5 layout \(root fields \['observations'\]\)"):
        open_dataset(other)
    text = tmp_path / "notes.txt"
    text.write_text("not hdf5")
    with pytest.raises(ValueError, match="notes.txt: not an HDF5 file or a vault directory"):
        open_dataset(text)
    omiga = tmp_path / "omiga.hdf5"
    with h5py.File(omiga, "w") as f:
        f["o"], f["s"], f["a"] = np.zeros((4, 2, 3)), np.zeros((4, 5)), np.zeros((4, 3), np.int64)
        f["r"], f["d"] = np.zeros((4, 1)), np.zeros((4, 1))
    with pytest.raises(ValueError, match=r"omiga.hdf5: field 'a': expected \[4, 2, action_dim\] floats or \[4, 2\] integers"):
        open_dataset(omiga)
    omapl = tmp_path / "omapl.h5"
    write_omapl(omapl, drop=("dones_y",))
    with pytest.raises(ValueError, match="omapl.h5: field 'dones_y' is missing"):
        open_dataset(omapl)
    lay = {
        "B": 1,
        "m": 2,
        "rows": [[2, 3]],
        "T": 5,
        "A": 3,
        "seed": 0,
        "team_reward": False,
        "legals": False,
        "state": False,
        "truncate": [False] * 24,
    }
    data, _ = raw_arrays(lay)
    write_vault(tmp_path, "Good", data)
    write_vault(tmp_path, "Poor", data)
    with pytest.raises(ValueError, match=r"data.vlt: holds the vaults \['Good', 'Poor'\]; give one of them"):
        open_dataset(tmp_path / "data.vlt")
    del data["terminals"]
    write_vault(tmp_path / "broken", "Good", data)
    with pytest.raises(ValueError, match=r"metadata.json: field 'structure_shape.terminals' is missing"):
        open_dataset(tmp_path / "broken" / "data.vlt")
    (tmp_path / "empty.vlt").mkdir()
    with pytest.raises(ValueError, match="empty.vlt: no metadata.json here or in a subdirectory"):
        open_dataset(tmp_path / "empty.vlt")


def test_continuous_actions_come_back_as_floats_with_real_steps_available(tmp_path):
    lay = {
        "B": 1,
        "m": 2,
        "rows": [[3, 4]],
        "T": 8,
        "A": 3,
        "seed": 5,
        "team_reward": False,
        "legals": False,
        "state": True,
        "truncate": [True] * 24,
    }
    data, episodes = raw_arrays(lay)
    data["actions"] = np.random.default_rng(5).uniform(-1, 1, (1, 8, 2, 6)).astype(np.float32)
    write_vault(tmp_path, "Expert", data)
    with open_dataset(tmp_path / "data.vlt") as reader:
        assert is_continuous(reader.spec) and reader.spec.env_config["action_dim"] == 6
        d = reader.read_fields(slice(None), ["actions", "avail"])
        valid, _ = step_masks(d["avail"])
        np.testing.assert_array_equal(valid.sum(axis=1), [3, 4])
        np.testing.assert_array_equal(d["actions"][1, :4], data["actions"][0, 3:7])
        assert (d["actions"][0, 3:] == 0).all()
    path = tmp_path / "Ant-v2.h5"
    write_omapl(path, P=3, T=5)
    with h5py.File(path, "a") as f:
        for side in "xy":
            del f[f"actions_{side}"], f[f"avails_{side}"]
            f[f"actions_{side}"] = np.ones((3, 5, 2, 4), np.float32)
    with open_dataset(path) as reader:
        assert is_continuous(reader.spec)
        d = reader.read_fields(np.arange(6), ["actions", "avail"])
        valid, _ = step_masks(d["avail"])
        assert (d["actions"][valid] == 1).all() and (d["actions"][~valid] == 0).all()


def test_label_and_coverage_commands_read_a_vault(tmp_path, capsys):
    """``marlcov deep label VAULT`` writes the pairs beside the vault's UID directory, and
    ``marlcov coverage VAULT`` finds them there, as for an HDF5 dataset."""
    import json

    from marlcov.cli import main

    lay = {**TWO_ROWS, "seed": 5, "team_reward": False}
    data, episodes = raw_arrays(lay)
    write_vault(tmp_path, "Run", data)
    capsys.readouterr()  # flashbax announces the new vault on stdout
    vault = tmp_path / "data.vlt" / "Run"
    assert main(["deep", "label", str(vault), "--pairs-per-trajectory", "4", "--json"]) == 0
    labelled = json.loads(capsys.readouterr().out)
    assert labelled["pairs"] == 4 * len(episodes) and Path(labelled["path"]).is_file()
    assert main(["coverage", str(vault), "--bootstrap", "0", "--feature-dim", "4", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["single"] <= doc["unilateral"] + 1e-9 <= doc["uniform"] + 2e-9


def test_the_marlhf_learners_train_on_a_vault(tmp_path, capsys):
    """The reward model, the reference and offline VDN read a labelled vault in place, as they
    read a marlcov dataset file (no copy, no conversion): one command each."""
    import json

    from marlcov.cli import main
    from marlcov.deep.checkpoints import load_checkpoint
    from tests.deep.tiny import TINY_PIPELINE

    lay = {**TWO_ROWS, "seed": 7, "team_reward": False, "legals": False}  # every recorded action available
    data, episodes = raw_arrays(lay)
    write_vault(tmp_path, "Run", data)
    capsys.readouterr()
    vault = str(tmp_path / "data.vlt" / "Run")
    config = tmp_path / "tiny.json"
    config.write_text(json.dumps(TINY_PIPELINE))
    common = ["--config", str(config), "--device", "cpu", "--json"]
    assert main(["deep", "label", vault, "--pairs-per-trajectory", "4", "--json"]) == 0
    capsys.readouterr()
    assert main(["deep", "train-reward", vault, "--out", str(tmp_path / "rm"), *common]) == 0
    capsys.readouterr()
    assert main(["deep", "train-reference", vault, "--out", str(tmp_path / "ref"), *common]) == 0
    capsys.readouterr()
    rm, ref = tmp_path / "rm" / "reward_model.pt", tmp_path / "ref" / "reference.pt"
    argv = ["deep", "train-policy", vault, "--reward-model", str(rm), "--reference", str(ref), "--out", str(tmp_path / "vdn"), *common]
    assert main(argv) == 0
    capsys.readouterr()
    names = {load_checkpoint(path).env_name for path in (rm, ref, tmp_path / "vdn" / "policy.pt")}
    assert len(names) == 1 and names.pop().startswith("og-marl-vault:")
    history = json.loads((tmp_path / "vdn" / "metrics.json").read_text())["history"]
    assert history and all(np.isfinite(r["td_loss"]) for r in history)
