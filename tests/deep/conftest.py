"""Fixtures shared by the deep tests: a local Ray instance on 2 CPUs (started once)."""

import pytest


@pytest.fixture(scope="session")
def ray_local():
    """``ray.init(num_cpus=2)`` for the session: ``deep.cells`` uses an initialised Ray as it is."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Every deep test module on one torch thread: tiny networks run ~10x faster on one thread
    than on a pool contended by the other test process, and results do not depend on it."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
