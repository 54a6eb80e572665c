"""fusion3d.analysis.stats: each statistic against a closed form, a hand count or brute force."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from fusion3d.analysis.regression import ols_effects, t_quantile
from fusion3d.analysis.stats import (
    agreement,
    average_ranks,
    binomial_se,
    bootstrap_ci,
    exact_permutation_p_value,
    kendall_tau_b,
    kendall_tau_null,
    mean_se,
    normal_quantile,
    p_value,
    pareto_front,
    partial_correlation,
    partial_spearman,
    pearson_r,
    permutation_p_value,
    regret,
    spearman_rho,
    spread_picks,
    tau_critical_value,
    top_k_overlap,
)

# ----------------------------------------------------------------------------- ranks and correlations


def test_average_ranks_give_tied_values_the_mean_of_their_ranks():
    np.testing.assert_array_equal(average_ranks([10, 30, 20, 30, 10]), [1.5, 4.5, 3, 4.5, 1.5])


def test_kendall_tau_b_matches_a_brute_force_double_loop_with_ties():
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 4, 15), rng.integers(0, 5, 15)
    c = d = tied_x = tied_y = 0
    for i in range(15):
        for j in range(i + 1, 15):
            s = np.sign(x[i] - x[j]) * np.sign(y[i] - y[j])
            c, d = c + (s > 0), d + (s < 0)
            tied_x, tied_y = tied_x + (x[i] == x[j]), tied_y + (y[i] == y[j])
    n0 = 15 * 14 // 2
    assert tied_x > 0 and tied_y > 0
    assert kendall_tau_b(x, y) == pytest.approx((c - d) / math.sqrt((n0 - tied_x) * (n0 - tied_y)), abs=1e-12)


def test_kendall_tau_is_one_for_concordant_and_minus_one_for_discordant_data():
    x = np.array([0.3, 1.0, 2.5, 7.0, 9.0])
    assert kendall_tau_b(x, 2 * x + 1) == 1.0
    assert kendall_tau_b(x, -(x**3)) == -1.0


def test_kendall_tau_is_nan_for_a_constant_variable_or_fewer_than_two_points():
    assert np.isnan(kendall_tau_b([1, 1, 1], [1, 2, 3]))
    assert np.isnan(kendall_tau_b([1], [2]))


def test_spearman_rho_equals_pearson_r_of_average_ranks():
    rng = np.random.default_rng(1)
    x, y = rng.integers(0, 5, 20), rng.normal(size=20).round(1)
    assert spearman_rho(x, y) == pytest.approx(pearson_r(average_ranks(x), average_ranks(y)), abs=1e-12)


def test_pearson_r_matches_its_closed_form_and_is_nan_for_an_exactly_constant_variable():
    x, y = np.array([1.0, 2, 4, 7]), np.array([2.0, 1, 5, 6])
    dx, dy = x - x.mean(), y - y.mean()
    assert pearson_r(x, y) == pytest.approx(dx @ dy / math.sqrt((dx @ dx) * (dy @ dy)), abs=1e-14)
    assert np.isnan(pearson_r([0.1, 0.1, 0.1], [1, 2, 3]))


def test_partial_correlation_without_z_is_the_plain_correlation():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=25), rng.normal(size=25)
    assert partial_correlation(x, y) == pytest.approx(pearson_r(x, y), abs=1e-12)
    assert partial_spearman(x, y) == pytest.approx(spearman_rho(x, y), abs=1e-12)


def test_partial_correlation_matches_the_three_variable_closed_form():
    rng = np.random.default_rng(3)
    z = rng.normal(size=40)
    x, y = z + rng.normal(size=40), z - rng.normal(size=40)

    def closed(r):
        rxy, rxz, ryz = r(x, y), r(x, z), r(y, z)
        return (rxy - rxz * ryz) / math.sqrt((1 - rxz**2) * (1 - ryz**2))

    assert partial_correlation(x, y, z) == pytest.approx(closed(pearson_r), abs=1e-12)
    assert partial_spearman(x, y, z) == pytest.approx(closed(spearman_rho), abs=1e-12)


# ----------------------------------------------------------------------------- p-values


def test_exact_permutation_p_value_for_n4_matches_a_hand_count():
    # tau = 4/6 (one discordant pair). Orders of 4 by inversions: 1, 3, 5, 6, 5, 3, 1; |S| = |6 - 2k| >= 4
    # for k in {0, 1, 5, 6}: 1 + 3 + 3 + 1 = 8 of 24.
    assert exact_permutation_p_value(kendall_tau_b, [1, 2, 3, 4], [1, 2, 4, 3]) == pytest.approx(8 / 24)


def test_exact_permutation_p_value_is_the_same_vectorised_and_called_once_per_order():
    x, y = [1, 2, 2, 3, 5, 6], [0.5, 0.1, 0.9, 0.9, 2.0, 1.5]
    for stat in (kendall_tau_b, spearman_rho, pearson_r):
        looped = exact_permutation_p_value(lambda a, b, s=stat: s(a, b), x, y)  # a lambda: no fast path
        assert exact_permutation_p_value(stat, x, y) == pytest.approx(looped, abs=1e-15)


def test_exact_and_monte_carlo_p_values_agree_within_monte_carlo_error_for_n7():
    x, y = np.arange(7.0), np.array([1.0, 0.0, 3.0, 2.0, 6.0, 4.0, 5.0])
    exact = exact_permutation_p_value(kendall_tau_b, x, y)
    mc = permutation_p_value(kendall_tau_b, x, y, permutations=20000, seed=5)
    assert abs(mc - exact) < 4 * math.sqrt(exact * (1 - exact) / 20000) + 1 / 20000


def test_permutation_p_value_is_seeded_and_never_below_one_over_permutations_plus_one():
    x = np.arange(12.0)
    assert permutation_p_value(kendall_tau_b, x, x, permutations=999, seed=1) == 1 / 1000
    assert permutation_p_value(spearman_rho, x, x[::-1], 500, 3) == permutation_p_value(
        spearman_rho, x, x[::-1], 500, 3
    )


def test_p_value_is_exact_up_to_exact_max_n_and_monte_carlo_beyond():
    x = np.arange(9.0)
    small = p_value(kendall_tau_b, x[:8], x[:8])
    large = p_value(kendall_tau_b, x, x, permutations=300)
    assert (small.method, small.permutations, small.p) == ("exact", 40320, 2 / 40320)
    assert (large.method, large.permutations, large.p) == ("monte-carlo", 300, 1 / 301)


def test_kendall_null_distribution_matches_brute_force_enumeration():
    taus, probs = kendall_tau_null(6)
    brute = [kendall_tau_b(range(6), p) for p in itertools.permutations(range(6))]
    values, counts = np.unique(np.round(brute, 12), return_counts=True)
    np.testing.assert_allclose(taus, values, atol=1e-12)
    np.testing.assert_allclose(probs, counts / 720, atol=1e-15)


def test_kendall_null_sd_for_n8_is_the_closed_form_0_289():
    taus, probs = kendall_tau_null(8)
    n = 8
    sd = math.sqrt(float(probs @ taus**2))
    assert sd == pytest.approx(math.sqrt(2 * (2 * n + 5) / (9 * n * (n - 1))), abs=1e-12)
    assert sd == pytest.approx(0.2887, abs=1e-4)


def test_tau_critical_value_for_n8_is_18_of_28_pairs():
    taus, probs = kendall_tau_null(8)
    crit = tau_critical_value(8)
    assert crit == pytest.approx(18 / 28)  # 0.643, the tabulated value
    assert probs[np.abs(taus) >= crit - 1e-12].sum() < 0.05 <= probs[np.abs(taus) >= 16 / 28 - 1e-12].sum()


def test_tau_critical_value_is_infinite_when_n_cannot_reach_alpha_and_normal_for_large_n():
    assert tau_critical_value(4) == math.inf and tau_critical_value(5) == 1.0
    n = 40
    assert tau_critical_value(n) == pytest.approx(
        1.959963985 * math.sqrt(2 * (2 * n + 5) / (9 * n * (n - 1)))
    )


# ----------------------------------------------------------------------------- bootstrap


def test_bootstrap_ci_is_reproducible_under_a_seed_and_differs_under_another():
    rng = np.random.default_rng(4)
    x = rng.normal(size=20)
    y = x + rng.normal(size=20)
    a, b = bootstrap_ci(kendall_tau_b, x, y, seed=7), bootstrap_ci(kendall_tau_b, x, y, seed=7)
    assert a == b and a != bootstrap_ci(kendall_tau_b, x, y, seed=8)
    assert a[0] < kendall_tau_b(x, y) < a[1]


def test_bootstrap_ci_is_the_percentile_interval_of_paired_resamples_skipping_nan():
    x, y = np.array([1.0, 1, 2, 3, 5]), np.array([2.0, 1, 1, 4, 3])
    idx = np.random.default_rng(9).integers(0, 5, size=(400, 5))
    vals = np.array([spearman_rho(x[i], y[i]) for i in idx])
    assert np.isnan(vals).any()  # some resamples repeat one point only
    expected = np.quantile(vals[~np.isnan(vals)], [0.05, 0.95])
    np.testing.assert_allclose(
        bootstrap_ci(spearman_rho, x, y, n_boot=400, level=0.9, seed=9), expected, atol=1e-12
    )


def test_agreement_bundles_tau_and_rho_with_p_values_and_intervals():
    x, y = [1, 2, 3, 4, 5, 6, np.nan], [1, 3, 2, 4, 6, 5, 0]
    out = agreement(x, y, n_boot=200, seed=1)
    assert out["n"] == 6 and out["tau_critical"] == pytest.approx(13 / 15)
    tau = out["kendall_tau"]
    assert tau["value"] == pytest.approx(kendall_tau_b(x[:6], y[:6]))
    assert (tau["p"], tau["p_method"]) == (exact_permutation_p_value(kendall_tau_b, x[:6], y[:6]), "exact")
    assert (tau["ci_low"], tau["ci_high"]) == bootstrap_ci(kendall_tau_b, x[:6], y[:6], 200, seed=1)
    assert out["spearman_rho"]["value"] == pytest.approx(spearman_rho(x[:6], y[:6]))


# ----------------------------------------------------------------------------- decisions


def test_top_k_overlap_counts_shared_items_and_breaks_ties_by_position():
    assert top_k_overlap([5, 4, 3, 2, 1], [1, 5, 4, 3, 2], k=2) == 0.5  # {0, 1} vs {1, 2}
    # three-way tie in pred: the earlier positions 0 and 1 make its top 2
    assert top_k_overlap([1, 1, 1, 0], [3, 3, 0, 0], k=2) == 1.0
    assert top_k_overlap([1, 1, 1, 0], [0, 3, 3, 0], k=2) == 0.5


def test_regret_is_the_truth_lost_by_trusting_the_argmax_of_pred_in_points_and_standard_errors():
    out = regret([0.9, 0.5, 0.7], [60.0, 66.0, 63.0], truth_se=2.0)
    assert (out["pick"], out["best"], out["regret"], out["regret_se"]) == (0, 1, 6.0, 3.0)
    assert regret([0, 1], [1, 2])["regret"] == 0.0 and regret([0, 1], [1, 2])["regret_se"] is None


def test_pareto_front_keeps_non_dominated_points_sorted_by_cost():
    flops = [1, 2, 2, 3, 4, np.nan, 1]
    acc = [50, 60, 55, 60, 70, 99, 50]
    assert pareto_front(flops, acc) == [0, 1, 4]  # 2 and 3 dominated by 1; 6 duplicates 0; NaN ignored


def test_spread_picks_include_the_best_and_the_worst():
    assert spread_picks([0.9, 0.1, 0.5, 0.85, 0.2], 3) == [0, 2, 1]  # nearest to 0.9, 0.5, 0.1


# ----------------------------------------------------------------------------- noise and effects


def test_binomial_se_is_in_percentage_points():
    assert binomial_se(75.0, 100) == pytest.approx(100 * math.sqrt(0.75 * 0.25 / 100))
    assert binomial_se(0.0, 10) == 0.0
    with pytest.raises(ValueError):
        binomial_se(101.0, 10)


def test_mean_se_uses_the_sample_standard_deviation():
    mean, se = mean_se([1.0, 2.0, 3.0, 6.0])
    assert mean == 3.0 and se == pytest.approx(math.sqrt(14 / 3) / 2)
    assert np.isnan(mean_se([4.0])[1])


def test_quantiles_match_closed_forms_and_tables():
    p = 0.975
    assert normal_quantile(p) == pytest.approx(1.959963984540054, abs=1e-12)
    assert t_quantile(p, 1) == pytest.approx(math.tan(math.pi * (p - 0.5)), rel=1e-12)
    assert t_quantile(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-12)
    for dof, table in ((5, 2.570582), (10, 2.228139), (30, 2.042272), (2000, 1.961151)):
        assert t_quantile(p, dof) == pytest.approx(table, abs=1e-6)
    assert t_quantile(0.025, 5) == -t_quantile(0.975, 5)


def test_ols_effects_recovers_coefficients_of_a_noiseless_design():
    X = np.array(list(itertools.product([0, 1], repeat=3)), dtype=float)  # three slot indicators
    y = 40 + X @ [2.0, -1.5, 0.25]
    fit = ols_effects(X, y, names=["T1", "T2", "T3"])
    assert fit.names == ("intercept", "T1", "T2", "T3") and fit.dof == 4
    np.testing.assert_allclose(fit.coef, [40, 2.0, -1.5, 0.25], atol=1e-10)
    np.testing.assert_allclose(fit.se, 0, atol=1e-10)


def test_ols_effects_standard_errors_and_interval_match_simple_regression_closed_forms():
    x, y = np.array([0.0, 1, 2, 3]), np.array([1.0, 3, 2, 5])
    n, sxx = 4, ((x - x.mean()) ** 2).sum()
    slope = ((x - x.mean()) @ (y - y.mean())) / sxx
    intercept = y.mean() - slope * x.mean()
    s2 = ((y - intercept - slope * x) ** 2).sum() / (n - 2)
    fit = ols_effects(x, y)
    np.testing.assert_allclose(fit.coef, [intercept, slope], atol=1e-12)
    np.testing.assert_allclose(fit.se, [math.sqrt(s2 * (1 / n + x.mean() ** 2 / sxx)), math.sqrt(s2 / sxx)])
    assert fit.as_dict()["x0"]["high"] == pytest.approx(slope + 4.302652729749464 * math.sqrt(s2 / sxx))


def test_ols_effects_refuses_a_rank_deficient_design():
    X = np.array([[0, 1], [1, 0], [0, 1], [1, 0]], dtype=float)  # the two columns sum to the intercept
    with pytest.raises(ValueError, match="rank deficient"):
        ols_effects(X, [1.0, 2.0, 3.0, 4.0])
