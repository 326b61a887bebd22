"""The pure selection core (no pyace): rank-1 MaxVol updates stay exact, greedy D-optimal picks."""
from __future__ import annotations

import numpy as np
import pytest

from pace_worker.algorithms.d_optimal import (
    Candidate,
    add_outer,
    greedy_d_optimal,
    picks_logdet_gain,
    swap_into_active_set,
)


@pytest.mark.parametrize("layout", ["C", "F", "float32"])
def test_add_outer_is_matrix_plus_alpha_x_y(layout):
    rng = np.random.default_rng(0)
    matrix = rng.normal(size=(50, 7))
    if layout == "F":
        matrix = np.asfortranarray(matrix)
    elif layout == "float32":
        matrix = matrix.astype(np.float32)
    x, y = rng.normal(size=50), rng.normal(size=7)
    expected = matrix + 0.37 * np.outer(x, y)
    add_outer(matrix, 0.37, x, y)
    np.testing.assert_allclose(matrix, expected, rtol=1e-6 if layout == "float32" else 1e-12)


@pytest.mark.parametrize("transposed", [False, True])
def test_a_swap_keeps_c_equal_to_b_times_the_new_inverse(transposed):
    rng = np.random.default_rng(1)
    active = rng.normal(size=(6, 6))
    b = rng.normal(size=(40, 6)) * 2
    inverse = np.linalg.inv(active)
    c = b @ inverse
    atom, row = 17, int(np.argmax(np.abs(c[17])))
    expected_gain = np.log(abs(np.linalg.det(np.vstack([active[:row], b[atom], active[row + 1:]])))) - \
        np.log(abs(np.linalg.det(active)))
    if transposed:  # Cᵀ stored in C order (as greedy_d_optimal keeps it)
        c_t = np.ascontiguousarray(c.T)
        gain = swap_into_active_set(c_t, inverse, atom, row)
        c = c_t.T
    else:  # C stored in C order, passed as its (Fortran-ordered) transpose
        gain = swap_into_active_set(c.T, inverse, atom, row)
    new_active = active.copy()
    new_active[row] = b[atom]
    np.testing.assert_allclose(inverse, np.linalg.inv(new_active), atol=1e-10)
    np.testing.assert_allclose(c, b @ np.linalg.inv(new_active), atol=1e-10)
    assert gain == pytest.approx(expected_gain, abs=1e-10)
    assert np.abs(c[atom] - np.eye(6)[row]).max() < 1e-10  # the swapped-in atom is now row `row` of A


def random_candidates(rng, n, n_functions=5):
    """Candidates of one or two elements, a few atoms each; some far outside the active set."""
    out = []
    for k in range(n):
        scale = 3.0 if k % 7 == 3 else 0.6
        projections = {"Cu": rng.normal(size=(rng.integers(1, 5), n_functions)) * scale}
        if k % 3 == 0:
            projections["Al"] = rng.normal(size=(2, n_functions)) * scale
        out.append(Candidate(100 + k, projections))
    return out


def test_greedy_picks_the_largest_gamma_first_and_grows_the_volume_more_than_random_sets():
    rng = np.random.default_rng(2)
    inverse = {el: np.linalg.inv(rng.normal(size=(5, 5)) + 3 * np.eye(5)) for el in ("Al", "Cu")}
    candidates = random_candidates(rng, 60)
    result = greedy_d_optimal(candidates, inverse, 10)

    gamma = [max(np.abs(p @ inverse[el]).max() for el, p in c.projections.items()) for c in candidates]
    assert result.order[0] == int(np.argmax(gamma))
    assert result.gamma_at_pick[0] == pytest.approx(max(gamma), rel=1e-12)
    assert len(result.order) == 10 and len(set(result.order)) == 10
    assert result.volume_gain == [g > 1 + 1e-9 for g in result.gamma_at_pick]
    assert sum(result.swaps_per_element.values()) >= sum(result.volume_gain)

    ours = sum(picks_logdet_gain([candidates[i] for i in result.order], inverse).values())
    random_sets = [sum(picks_logdet_gain([candidates[i] for i in rng.choice(60, 10, replace=False)],
                                         inverse).values()) for _ in range(20)]
    assert ours > max(random_sets), (ours, max(random_sets))


def test_given_first_picks_come_first_and_the_rest_is_deterministic():
    rng = np.random.default_rng(3)
    inverse = {el: np.linalg.inv(rng.normal(size=(5, 5)) + 3 * np.eye(5)) for el in ("Al", "Cu")}
    candidates = random_candidates(rng, 30)
    a = greedy_d_optimal(candidates, inverse, 8, first=[5, 2])
    b = greedy_d_optimal(candidates, inverse, 8, first=[5, 2])
    assert a.order[:2] == [5, 2] and a.order == b.order and a.gamma_at_pick == b.gamma_at_pick
    gamma_5 = max(np.abs(p @ inverse[el]).max() for el, p in candidates[5].projections.items())
    assert a.gamma_at_pick[0] == pytest.approx(gamma_5, rel=1e-12)
    assert len(greedy_d_optimal(candidates, inverse, 100).order) == 30  # all, when fewer than asked
