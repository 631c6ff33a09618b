"""The layout contract of DESIGN.md: one installed namespace, imports in one direction."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: The repository folders installed under ``marlcov.<name>``.
FOLDERS = ("theory", "linear_games", "proofs_checks", "deep")
#: What each package may import of the others (DESIGN.md, "Layout"): theory <- linear_games <-
#: proofs_checks, theory <- deep, proofs_checks may import deep. ``marlcov.cli`` may import all.
ALLOWED = {
    "theory": set(),
    "linear_games": {"theory"},
    "deep": {"theory"},
    "proofs_checks": {"theory", "linear_games", "deep"},
}


def _sources(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (REPO / folder).rglob("*.py") if "__pycache__" not in p.parts)


def _imported_modules(path: Path) -> set[str]:
    """Absolute module names imported anywhere in ``path`` (inside functions too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_pyproject_lists_every_package_folder():
    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
    mapping = config["package-dir"]
    assert set(mapping) == {"marlcov"} | {f"marlcov.{f}" for f in FOLDERS}
    on_disk = set()
    for installed, folder in mapping.items():
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / folder).parts
            on_disk.add(".".join((installed, *rel)))
    assert set(config["packages"]) == on_disk


@pytest.mark.parametrize("path", _sources(*FOLDERS, "marlcov", "tests", "benchmarks"), ids=lambda p: str(p.relative_to(REPO)))
def test_nothing_imports_the_bare_folder_names(path):
    bare = {m for m in _imported_modules(path) if m.split(".")[0] in FOLDERS}
    assert not bare, f"{path.relative_to(REPO)} imports {sorted(bare)}: use marlcov.<package>"


@pytest.mark.parametrize("folder", FOLDERS)
def test_imports_run_one_way(folder):
    wrong = {}
    for path in _sources(folder):
        for module in _imported_modules(path):
            parts = module.split(".")
            if parts[0] == "marlcov" and len(parts) > 1 and parts[1] in FOLDERS and parts[1] != folder:
                if parts[1] not in ALLOWED[folder]:
                    wrong.setdefault(str(path.relative_to(REPO)), []).append(module)
            if parts[0] == "marlcov" and len(parts) > 1 and parts[1] == "cli":
                wrong.setdefault(str(path.relative_to(REPO)), []).append(module)
    assert not wrong


def test_installed_names_outside_the_repository(tmp_path):
    """Only ``marlcov`` is importable: ``import theory`` / ``import deep`` fail outside the
    repository, and ``import marlcov`` gives its first names without importing torch."""
    code = (
        "import importlib, sys\n"
        "for name in ('theory', 'deep', 'linear_games', 'proofs_checks'):\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except ModuleNotFoundError:\n"
        "        pass\n"
        "    else:\n"
        "        raise SystemExit(f'{name} is importable')\n"
        "import marlcov, marlcov.theory.games, marlcov.linear_games, marlcov.proofs_checks.registry\n"
        "assert 'torch' not in sys.modules, 'import marlcov imported torch'\n"
        "print(marlcov.__version__)\n"
    )
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr


def test_top_level_names_are_the_subpackages_objects():
    import importlib

    import marlcov

    for name, module in marlcov._EXPORTS.items():
        assert getattr(marlcov, name) is getattr(importlib.import_module(module), name), name
    assert set(marlcov.__all__) <= set(dir(marlcov))


def test_top_level_verify_runs_a_check():
    import marlcov
    from marlcov.proofs_checks.registry import all_checks

    first = next(iter(all_checks()))
    (result,) = marlcov.verify([first])
    assert result.check.id == first and result.status != "error", result.error


def test_version_is_the_distributions():
    import marlcov

    assert tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"] == marlcov.__version__


def test_ci_runs_the_readmes_test_command():
    """The README's set-up names one command for the tests; .ci/run must run exactly it."""
    readme = (REPO / "README.md").read_text()
    section = readme.split("The tests include the deep pipeline's", 1)[1]
    command = section.split("```bash\n", 1)[1].split("\n```", 1)[0].strip()
    install, test = command.split(" && ")
    ci = (REPO / ".ci" / "run").read_text()
    assert install in ci and test in ci, command
    assert ci.index(install) < ci.index(test)
