"""Rank correlations of the series study: exact Spearman p-values for few runs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import permutation_test, spearmanr

from funnelscope.studies.series import rank_correlations, spearman_p_value


@pytest.mark.parametrize("n", [4, 6])
def test_exact_spearman_p_equals_scipys_exact_permutation_test(n: int) -> None:
    rng = np.random.default_rng(n)
    x, y = rng.random(n), rng.random(n)
    y[1] = y[0]  # a tie
    rho = spearmanr(x, y).statistic
    reference = permutation_test((x,), lambda a: spearmanr(a, y).statistic, permutation_type="pairings",
                                 n_resamples=np.inf, alternative="two-sided").pvalue  # the n! orderings of x
    assert spearman_p_value(x, y, rho, np.nan) == pytest.approx(reference, rel=1e-12)


def test_five_runs_in_perfect_order_give_p_one_in_sixty() -> None:
    frame = pd.DataFrame({"alpha_mean": [1.0, 2.0, 3.0, 4.0, 5.0], "test_accuracy": [0.9, 0.8, 0.7, 0.6, 0.5]})
    row = rank_correlations(frame, targets=(("test_accuracy", "test accuracy"),)).iloc[0]
    assert row["spearman_rho"] == pytest.approx(-1.0)
    assert row["spearman_p"] == pytest.approx(2 / 120)  # was 1.4e-24 from the t approximation
    assert row["kendall_p"] == pytest.approx(2 / 120)  # scipy's exact Kendall test agrees
