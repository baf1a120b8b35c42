"""IsoFLOP minima (approach 2) on curves drawn from a known L(N, D): the exponent comes out as β/(α+β)."""

import numpy as np
import pandas as pd
import pytest

from lvm.analysis.isoflop import fit_isoflop, isoflop_minima, isoflop_profiles
from lvm.analysis.loss_surface import HOFFMANN_2022

TOKENS = np.geomspace(1e8, 1e12, 60)


def curves_of(sizes, tokens=TOKENS) -> pd.DataFrame:
    rows = [(job, n, d, float(HOFFMANN_2022.loss(n, d))) for job, n in enumerate(sizes) for d in tokens]
    return pd.DataFrame(rows, columns=["job", "params", "tokens", "loss"])


def test_exponent_of_noise_free_curves_is_beta_over_alpha_plus_beta():
    fit = fit_isoflop(curves_of(np.geomspace(1e7, 1e10, 10)), n_budgets=8)
    assert len(fit.minima) >= 6
    assert fit.params_exponent.value == pytest.approx(HOFFMANN_2022.params_exponent, abs=0.01)
    assert fit.params_exponent.contains(HOFFMANN_2022.params_exponent)
    assert fit.tokens_exponent.value == pytest.approx(1 - fit.params_exponent.value)
    minima = fit.minima
    assert (np.diff(minima["params_opt"]) > 0).all() and (np.diff(minima["tokens_opt"]) > 0).all()
    # Each minimum is (close to) the true optimum at its compute.
    n_true, _ = HOFFMANN_2022.optimal_allocation(minima["compute"].to_numpy())
    assert np.abs(np.log(minima["params_opt"] / n_true)).max() < np.log(1.3)


def test_profiles_are_read_only_where_three_sizes_overlap():
    profiles = isoflop_profiles(curves_of([1e7, 1e8, 1e9]), n_budgets=5)
    assert set(profiles.groupby("compute").size()) == {3}
    c = profiles["compute"].to_numpy()
    assert c.min() >= 6 * 1e9 * 1e8 * 0.999 and c.max() <= 6 * 1e7 * 1e12 * 1.001


def test_a_minimum_outside_the_sizes_is_not_reported():
    # Three small sizes at a budget whose optimum is far larger: loss falls monotonically with N.
    profiles = pd.DataFrame({"compute": 1e21, "job": [0, 1, 2], "params": [1e6, 2e6, 4e6]})
    profiles["loss"] = HOFFMANN_2022.loss(profiles["params"], 1e21 / (6 * profiles["params"]))
    assert isoflop_minima(profiles).empty


def test_sizes_whose_compute_ranges_do_not_overlap_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="at least 2 compute levels where runs of ≥ 3 sizes overlap"):
        fit_isoflop(curves_of([1e7, 1e9, 1e11], tokens=np.geomspace(1e8, 1e9, 10)))
