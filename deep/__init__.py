"""Deep MARLHF on MPE: batched environments, HDF5 offline datasets, preference labelling.

Importing ``deep`` itself loads neither torch nor jax; the submodules that need them
(``deep.envs.mpe``, ``deep.envs.parity``) import them when they are imported. The data layer
(``deep.data``) needs only numpy and h5py.
"""
