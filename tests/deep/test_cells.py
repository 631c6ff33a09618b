"""marlcov.deep.cells: cells run inline, in local processes and as Ray tasks; existing results are
read back, failures name the cell. The cell function is ``builtins:dict`` (its keyword
arguments are its result), importable in any worker."""

import json

import pytest

from marlcov.deep.cells import Cell, default_workers, run_cell, run_cells

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
