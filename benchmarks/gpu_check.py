"""One prepared check of the deep learners on a CUDA device, against the CPU run of the same cells.

    python benchmarks/gpu_check.py [--out DIR] [--json OUT.json] [--scale 1.0]

On a machine with CUDA it runs, on the CPU and then on the GPU, the same two cells on the same
small dataset (simple_spread_v3, uniform-random episodes, Bradley-Terry labels; written once
into ``--out``):

* a Table 2 cell: the MARLHF learning stages of one mix and seed (reward model, imitation
  reference, offline VDN with the KL reward) and the greedy policy's evaluation;
* a compare cell: ``marlcov.deep.compare.algorithm_cell("omapl", ...)`` with its evaluation.

While they run it checks, through torch's global hooks, that every input of every module's
forward pass and every parameter and optimiser state tensor lives on the run's device (any
other device fails the check, exit status 1), and it counts host synchronisations per
optimiser step: calls of ``Tensor.item``, ``.cpu``, ``.numpy``, ``.tolist``, ``bool()``,
``float()``, ``int()`` and ``__array__`` made from marlcov's code, with their file:line (on
the CPU every such call is counted, as it would synchronise on a GPU; on the GPU only those on
CUDA tensors, plus the synchronising operations that ``torch.cuda.set_sync_debug_mode`` reports).
It prints, per stage, optimiser steps per second on each device, their ratio, the syncs per
step and the call sites. Sized to finish in well under 5 minutes on one GPU (the CPU half takes
longer on a small CPU); ``--scale`` multiplies the step counts.

Without CUDA it says so, runs the CPU half and exits 0.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

ENV = "simple_spread_v3"
N_TRAJECTORIES = 512
ROLLOUT_BATCH = 256
PAIRS_PER_TRAJECTORY = 10
EVAL_EPISODES = 64
#: Forward inputs and optimiser steps checked in full before switching to one in SAMPLE_EVERY.
CHECK_FIRST = 200
SAMPLE_EVERY = 50
SYNC_METHODS = ("item", "cpu", "numpy", "tolist", "__bool__", "__float__", "__int__", "__array__")
MARLCOV_ROOT = Path(__file__).resolve().parent.parent


def stage_configs(scale: float) -> dict:
    n = lambda k: max(1, int(round(k * scale)))  # noqa: E731
    return {
        "reward_model": {
            "model": "mlp",
            "hidden": 64,
            "layers": 4,
            "variance": "none",
            "epochs": n(4),
            "batch_size": 256,
            "lr": 1e-3,
            "progress": False,
        },
        "reference": {"hidden": 64, "layers": 3, "epochs": n(4), "batch_size": 128, "lr": 1e-3, "progress": False},
        "offline_vdn": {
            "beta": 1.0,
            "hidden": 64,
            "layers": 3,
            "lr": 1e-3,
            "batch_size": 64,
            "updates": n(400),
            "target_update": 200,
            "progress": False,
        },
        "omapl": {
            "hidden": 64,
            "layers": 2,
            "mixer_hidden": 32,
            "lr": 3e-4,
            "steps": n(400),
            "batch_pairs": 32,
            "beta": 1.0,
            "checkpoint_every": 10**9,
        },
    }


def make_dataset(out: Path) -> tuple[Path, Path]:
    """A labelled simple_spread_v3 dataset of uniform-random episodes (made once, then reused)."""
    from marlcov.deep.data.hdf5 import DatasetReader, DatasetWriter, write_pairs_file
    from marlcov.deep.data.preferences import label_dataset
    from marlcov.deep.envs.mpe import MPEBatch, UniformRandomPolicy

    data, pairs = out / "data.h5", out / "data.pairs.h5"
    if data.exists() and pairs.exists():
        return data, pairs
    env = MPEBatch(ENV, ROLLOUT_BATCH)
    with DatasetWriter(data, env.spec.dataset_spec(), overwrite=True) as writer:
        for k in range(N_TRAJECTORIES // ROLLOUT_BATCH):
            writer.append(env.rollout(UniformRandomPolicy(k), seeds=k * ROLLOUT_BATCH, source="uniform"))
    with DatasetReader(data) as reader:
        write_pairs_file(pairs, label_dataset(reader, PAIRS_PER_TRAJECTORY, 5.0, seed=0), reader, overwrite=True)
    return data, pairs


class Probe:
    """Device checks and host-synchronisation counts of one stage (module docstring)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.steps = 0
        self.forwards = 0
        self.syncs: collections.Counter = collections.Counter()
        self.direct_sites: set[str] = set()
        self.misplaced: list[str] = []

    @staticmethod
    def _where(depth: int = 2, through_torch: bool = False) -> str | None:
        """``file:line`` of the marlcov code at ``depth`` frames up; with ``through_torch``, of
        the first marlcov frame above torch's own (a sync torch makes on a CPU tensor, such as
        Adam reading its step count, is no host synchronisation, so syncs count direct calls)."""
        frame = sys._getframe(depth)
        while frame is not None:
            path = Path(frame.f_code.co_filename)
            if path.is_relative_to(MARLCOV_ROOT) and "benchmarks" not in path.parts:
                return f"{path.relative_to(MARLCOV_ROOT)}:{frame.f_lineno}"
            if not through_torch or "torch" not in path.parts:
                return None
            frame = frame.f_back
        return None

    def _check(self, what: str, tensor) -> None:
        if isinstance(tensor, torch.Tensor) and tensor.device.type != self.device.type and len(self.misplaced) < 20:
            self.misplaced.append(f"{what} on {tensor.device} (expected {self.device.type}) at {self._where(3, through_torch=True)}")

    def forward_pre_hook(self, module, args):
        self.forwards += 1
        if self.forwards <= CHECK_FIRST or self.forwards % SAMPLE_EVERY == 0:
            for a in args:
                self._check(f"{type(module).__name__} input", a)

    def step_post_hook(self, optimizer, args, kwargs):
        self.steps += 1
        if self.steps <= CHECK_FIRST or self.steps % SAMPLE_EVERY == 0:
            for group in optimizer.param_groups:
                for p in group["params"]:
                    self._check(f"{type(optimizer).__name__} parameter", p)
                    for key, value in optimizer.state.get(p, {}).items():
                        if key != "step" or value.dim() > 0:  # Adam keeps its step count on the CPU by design
                            self._check(f"{type(optimizer).__name__} state {key!r}", value)

    @contextlib.contextmanager
    def active(self):
        from torch.nn.modules.module import register_module_forward_pre_hook
        from torch.optim.optimizer import register_optimizer_step_post_hook

        originals = {name: getattr(torch.Tensor, name) for name in SYNC_METHODS}
        probe, cuda = self, self.device.type == "cuda"

        def counting(name, original):
            def wrapper(tensor, *args, **kwargs):
                if not cuda or tensor.is_cuda:
                    site = probe._where()
                    if site is not None:
                        probe.syncs[f"{name} at {site}"] += 1
                        probe.direct_sites.add(site)
                return original(tensor, *args, **kwargs)

            return wrapper

        handles = [register_module_forward_pre_hook(self.forward_pre_hook), register_optimizer_step_post_hook(self.step_post_hook)]
        for name, original in originals.items():
            setattr(torch.Tensor, name, counting(name, original))
        caught = contextlib.nullcontext([])
        if cuda:
            torch.cuda.set_sync_debug_mode("warn")
            caught = warnings.catch_warnings(record=True)
        try:
            with caught as records:
                if cuda:
                    warnings.simplefilter("always")
                yield self
            for w in records or []:
                if "synchroniz" in str(w.message).lower():
                    path = Path(w.filename)
                    site = f"{path.relative_to(MARLCOV_ROOT)}:{w.lineno}" if path.is_relative_to(MARLCOV_ROOT) else None
                    if site is not None and site not in self.direct_sites:  # a direct call is counted once, above
                        self.syncs[f"cuda sync at {site}"] += 1
        finally:
            if cuda:
                torch.cuda.set_sync_debug_mode(0)
            for name, original in originals.items():
                setattr(torch.Tensor, name, original)
            for h in handles:
                h.remove()

    def report(self, name: str, seconds: float) -> dict:
        total = sum(self.syncs.values())
        return {
            "stage": name,
            "device": self.device.type,
            "seconds": seconds,
            "optimiser_steps": self.steps,
            "steps_per_s": self.steps / seconds if seconds > 0 else None,
            "syncs": total,
            "syncs_per_step": total / self.steps if self.steps else None,
            "sites": dict(self.syncs.most_common(12)),
            "misplaced": self.misplaced,
        }


def run_stages(data: Path, pairs: Path, device: str, work: Path, scale: float) -> list[dict]:
    """The two cells on ``device``, stage by stage, each under its own ``Probe``."""
    from marlcov.deep.compare import algorithm_cell
    from marlcov.deep.marlhf.evaluate import evaluate_policy
    from marlcov.deep.marlhf.reference import train_reference
    from marlcov.deep.marlhf.reward_model import train_reward_model
    from marlcov.deep.marlhf.vdn import train_offline_vdn

    cfg, dev = stage_configs(scale), torch.device(device)
    out = work / device
    shutil.rmtree(out, ignore_errors=True)  # every stage trains from scratch (the trainers resume otherwise)
    stages = [
        (
            "table2: reward model",
            lambda: train_reward_model(data, cfg["reward_model"], out / "rm", device, 0, resume=False, pairs_path=pairs),
        ),
        ("table2: reference", lambda: train_reference(data, cfg["reference"], out / "ref", device, 0, resume=False)),
        (
            "table2: offline VDN",
            lambda: train_offline_vdn(
                data, out / "rm" / "reward_model.pt", out / "ref" / "reference.pt", cfg["offline_vdn"], out / "vdn", device, 0, resume=False
            ),
        ),
        (
            "table2: evaluation",
            lambda: evaluate_policy(out / "vdn" / "policy.pt", ENV, EVAL_EPISODES, 0, EVAL_EPISODES, device, progress=False),
        ),
        (
            "compare: omapl cell",
            lambda: algorithm_cell(
                "omapl", str(data), str(pairs), cfg, str(out / "omapl"), 0, {"episodes": EVAL_EPISODES, "batch_size": EVAL_EPISODES}, device
            ),
        ),
    ]
    rows = []
    for name, call in stages:
        probe = Probe(dev)
        error = None
        with probe.active():
            start = time.perf_counter()
            try:
                call()
            except Exception as exc:  # noqa: BLE001 - reported with its stage; the other stages still run
                error = f"{type(exc).__name__}: {exc}"
            if dev.type == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - start
        rows.append(dict(probe.report(name, seconds), error=error))
        if error:
            print(f"  {device:4s} {name:22s} FAILED: {error}", flush=True)
            continue
        print(
            f"  {device:4s} {name:22s} {seconds:7.1f} s  {probe.steps:5d} steps  "
            f"{rows[-1]['syncs_per_step'] or 0:6.2f} syncs/step  misplaced: {len(probe.misplaced)}",
            flush=True,
        )
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="working directory (default: a temporary one)")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--scale", type=float, default=1.0, help="multiplies every step count")
    args = parser.parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    has_cuda = torch.cuda.is_available()
    if not has_cuda:
        print("CUDA is not available on this machine: running the CPU half only.", flush=True)
    else:
        import jax

        try:
            jax.devices("gpu")
        except RuntimeError:
            print(
                "jax has no CUDA backend here: the compare cell's evaluation, which steps its environment on the "
                "device, will fail (install jax with CUDA support, e.g. pip install 'jax[cuda12]').",
                flush=True,
            )
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.out or tmp)
        work.mkdir(parents=True, exist_ok=True)
        data, pairs = make_dataset(work)
        results = {
            "torch": torch.__version__,
            "cuda": torch.version.cuda if has_cuda else None,
            "gpu": torch.cuda.get_device_name(0) if has_cuda else None,
            "rows": [],
        }
        for device in ("cpu", "cuda") if has_cuda else ("cpu",):
            results["rows"] += run_stages(data, pairs, device, work, args.scale)
    by = {(r["stage"], r["device"]): r for r in results["rows"]}
    print("\nstage                   cpu steps/s  cuda steps/s  cuda/cpu  syncs/step (cpu, cuda)")
    for stage in dict.fromkeys(r["stage"] for r in results["rows"]):
        c, g = by[(stage, "cpu")], by.get((stage, "cuda"))
        ratio = g["steps_per_s"] / c["steps_per_s"] if g and c["steps_per_s"] and g["steps_per_s"] else float("nan")
        print(
            f"{stage:22s} {c['steps_per_s'] or 0:12.1f} {(g or {}).get('steps_per_s') or 0:13.1f} {ratio:9.2f}  "
            f"{c['syncs_per_step'] or 0:.2f}, {(g or {}).get('syncs_per_step') or 0:.2f}"
        )
    print("\nhost synchronisations by call site (first device listed):")
    for row in results["rows"]:
        for site, count in row["sites"].items():
            print(f"  {row['device']:4s} {row['stage']:22s} {count:6d}  {site}")
    if args.json:
        from marlcov.deep.common import atomic_write_text

        atomic_write_text(json.dumps(results, indent=1) + "\n", args.json)
    bad = [m for r in results["rows"] for m in r["misplaced"]]
    if bad:
        print("\nFAILED: tensors off the run's device:\n  " + "\n  ".join(bad), file=sys.stderr)
    errors = [f"{r['device']} {r['stage']}: {r['error']}" for r in results["rows"] if r["error"]]
    if errors:
        print("\nFAILED stages:\n  " + "\n  ".join(errors), file=sys.stderr)
    return 1 if bad or errors else 0


if __name__ == "__main__":
    sys.exit(main())
