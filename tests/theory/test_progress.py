from unittest.mock import patch

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from marlcov.theory import progress
from marlcov.theory.progress import listening, task, tracked


class Recorder:
    def __init__(self):
        self.events = []

    def start(self, t):
        self.events.append(("start", t.description, t.done, t.total))

    def update(self, t):
        self.events.append(("update", t.description, t.done, t.total))

    def finish(self, t):
        self.events.append(("finish", t.description, t.done, t.total))


@given(st.lists(st.integers(), max_size=20))
def test_tracked_reports_every_item_between_start_and_finish(items):
    rec = Recorder()
    with listening(rec):
        assert list(tracked(items, "items")) == items
    n = len(items)
    assert rec.events == [("start", "items", 0, n), *[("update", "items", k, n) for k in range(1, n + 1)], ("finish", "items", n, n)]


def test_nothing_is_reported_without_a_listener_and_after_the_block():
    rec = Recorder()
    with task("outside") as t:
        t.advance()
    with listening(rec):
        pass
    list(tracked([1, 2], "after"))
    assert rec.events == []


def test_a_failing_computation_still_finishes_its_task():
    rec = Recorder()
    with listening(rec), pytest.raises(RuntimeError), task("fails", 3) as t:
        t.advance()
        raise RuntimeError("boom")
    assert rec.events[-1] == ("finish", "fails", 1, 3)


@given(st.integers(1, 100), st.integers(0, 100), st.floats(0.5, 1e4))
def test_time_left_is_the_mean_rate_times_the_units_left(total, done, elapsed):
    t = progress.Task("x", total, done=min(done, total), started=1000.0)
    with patch.object(progress.time, "monotonic", return_value=1000.0 + elapsed):
        left = t.remaining()
    if t.done == 0:
        assert left is None
    else:
        assert left == pytest.approx(elapsed / t.done * (total - t.done), rel=1e-12)
    assert progress.Task("y").remaining() is None


def test_streaming_reads_of_a_dataset_report_their_batches(tmp_path):
    from marlcov.deep.data import DatasetReader, DatasetSpec, DatasetWriter, TrajectoryBatch

    N, H, m, nA = 10, 2, 2, 3
    spec = DatasetSpec("toy", {}, ("a0", "a1"), 1, 1, nA, H)
    with DatasetWriter(tmp_path / "d.h5", spec) as w:
        w.append(
            TrajectoryBatch(
                np.zeros((N, H + 1, m, 1), np.float32),
                np.zeros((N, H + 1, 1), np.float32),
                np.zeros((N, H, m), np.int16),
                np.ones((N, H, m, nA), bool),
                np.zeros((N, H, m), np.float32),
                np.arange(N),
                "mix",
            )
        )
    rec = Recorder()
    with listening(rec), DatasetReader(tmp_path / "d.h5") as reader:
        seen = [idx for idx, _ in reader.iter_batches(4, fields=["actions"], shuffle=True, seed=0)]
    assert sorted(np.concatenate(seen).tolist()) == list(range(N))
    name = "reading actions of d.h5"
    assert rec.events == [
        ("start", name, 0, 3),
        ("update", name, 1, 3),
        ("update", name, 2, 3),
        ("update", name, 3, 3),
        ("finish", name, 3, 3),
    ]
