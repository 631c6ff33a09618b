"""The registered check marlhf.identifiable_certificate: it holds, and each planted mutation refutes it."""

import pytest

import marlcov.proofs_checks.marlhf_identifiable  # noqa: F401  (registers the check)
from marlcov.proofs_checks import registry

CHECK_ID = "marlhf.identifiable_certificate"


@pytest.mark.slow
@pytest.mark.parametrize("mutation", [None, "point_estimate", "paper_reference"])
def test_the_check_holds_and_every_planted_mutation_refutes_it(mutation, tmp_path):
    chk = registry._REGISTRY[CHECK_ID]
    assert mutation is None or mutation in chk.mutations
    result = registry.run_check(chk, registry.CheckContext(quick=True, seed=0, out_dir=tmp_path, mutation=mutation))
    assert result.verdict is not None, result
    assert result.verdict.verdict == ("holds" if mutation is None else "refuted")
    if mutation is None:
        assert result.verdict.evidence["sound_fraction"] >= 1 - result.verdict.evidence["delta"]
        assert (tmp_path / "marlhf_identifiable_certificate.png").stat().st_size > 0
