"""Deep MARLHF on MPE: batched environments, HDF5 offline datasets, preference labelling.

Importing ``deep`` itself loads neither torch nor jax; the submodules that need them
(``deep.envs.mpe``, ``deep.envs.parity``) import them when they are imported. The data layer
(``deep.data``) needs only numpy and h5py.

Importing it sets ``MKL_CBWR=AUTO,STRICT`` unless the environment already sets ``MKL_CBWR``:
MKL's strict conditional numerical reproducibility, under which its matrix products (and so
every training run on the CPU) give the same bits whatever the number of threads. MKL reads it
at its first call, so it holds unless MKL ran before ``marlcov.deep`` was imported.
"""

import os

os.environ.setdefault("MKL_CBWR", "AUTO,STRICT")
