"""Fixtures shared by the deep tests: a local Ray instance on 2 CPUs (started once)."""

import pytest


@pytest.fixture(scope="session")
def ray_local():
    """``ray.init(num_cpus=2)`` for the session: ``deep.cells`` uses an initialised Ray as it is."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()
