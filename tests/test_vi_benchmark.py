"""The VI benchmark's surrogates compare at the same parameter budget: a
spline flow gets the widest networks that keep it within the affine flow's
parameters, whatever its bins (benchmarks/vi_spline.py)."""

import pytest

from tests.script_loader import load_script


@pytest.fixture(scope="module")
def vi():
    return load_script("benchmarks", "vi_spline")


@pytest.mark.parametrize("bound, bins, hidden", [(3.0, 8, 30), (5.0, 4, 43)])
def test_spline_surrogates_are_the_widest_within_the_affine_budget(vi, bound, bins, hidden):
    budget = vi._size(vi.surrogate("affine", 10))
    assert budget == 31_244  # the pipelines benchmark's affine flow
    assert vi.spline_hidden_units(10, bound, bins) == hidden
    assert vi._size(vi._spline_affine(10, bound, bins, hidden)) <= budget
    assert vi._size(vi._spline_affine(10, bound, bins, hidden + 1)) > budget
    kind = f"spline_affine_{bound:g}_b{bins}"
    assert vi._size(vi.surrogate(kind, 10)) == vi._size(vi._spline_affine(10, bound, bins, hidden))
