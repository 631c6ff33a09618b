"""What the coverage-diagnostic tests compare between reports of the same data stored with more or
less padding (``deep.diagnostics.diagnose`` on HDF5 and SMAX datasets)."""

import numpy as np

#: The same measures from covariances of another size (padding dropped or kept) or summed in
#: another order: float64 rounding of a few hundred terms.
PAD_RTOL = 1e-9


def measures(out):
    """The numbers of a report that must not depend on how much padding the episodes carry."""
    keys = [out["single"], out["unilateral"], out["uniform"]]
    for a in out["per_agent"]:
        keys += [a["unilateral"], a["plug_in"], a["uniform_deviation"]]
    for name in ("single", "unilateral", "uniform"):
        b = out["bootstrap"].get(name)
        if b:
            keys += [b["point"], b["low"], b["high"]]
    for size in out["sizes"]:
        keys += [size["single"], size["unilateral"], size["uniform"]]
    c = out["counts"]
    keys += [c["transitions"], c["joint_saco"], c["distinct_states"], *c["individual_saco"], *c.get("unilateral_seen", [])]
    return np.array(keys, dtype=np.float64)
