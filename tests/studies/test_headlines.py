"""Headlines across an ordered sweep state their rank correlation, and runs that did not fit are flagged."""

from __future__ import annotations

import json
import re
from itertools import permutations
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from funnelscope.report.html import collect_study, render_report
from funnelscope.studies import labels as labels_module
from funnelscope.studies.catalog import get_study
from funnelscope.studies.experiment import FIT_THRESHOLD, is_fitted
from funnelscope.studies.headlines import fitted_mask, sweep_correlation, trend, unfit_caution
from funnelscope.studies.study import StudyOutputs, run_study

# the demo's shape: weights α 1.99 at true labels, 2.91 at random ones, not monotone in between (5.68 at 25 %)
NOISES = [0.0, 0.25, 0.5, 0.75, 1.0]
ALPHAS = [1.99, 5.68, 3.10, 2.40, 2.91]


def _runs(train_accuracy: list[float], *, noises: list[float] = NOISES, alphas: list[float] = ALPHAS) -> pd.DataFrame:
    return pd.DataFrame({
        "run_id": [f"noise{noise:g}_s0" for noise in noises], "label_noise": noises, "seed": 0,
        "train_accuracy": train_accuracy, "test_accuracy": np.linspace(0.97, 0.1, len(noises)),
        "alpha_mean": alphas, "jac_lambda_max": np.linspace(214.0, 1600.0, len(noises)),
    })


def _rho(text: str) -> float:
    match = re.search(r"ρ = (-?\d\.\d\d), p = ([\d.e-]+), (\d+) noise levels", text)
    assert match, text
    return float(match.group(1))


def test_a_non_monotone_metric_states_scipys_spearman_rho_beside_its_endpoints() -> None:
    runs = _runs([1.0] * 5)
    text = trend(runs, "label_noise", "alpha_mean", levels_name="noise levels")
    expected = spearmanr(NOISES, ALPHAS).statistic  # scipy 1.x: ρ = 0.1 (ranks 1 5 4 2 3 against 1 … 5)
    assert text.startswith("1.99 → 2.91 (")
    assert _rho(text) == pytest.approx(round(expected, 2)) == pytest.approx(0.1)
    # exact two-sided p for n = 5: the share of the 120 orderings of the ranks with |ρ| ≥ 0.1, enumerated here
    ranks = np.arange(5.0) - 2.0
    null = [abs(np.dot(ranks, np.array(perm) - 2.0)) / 10.0 for perm in permutations(range(5))]
    exact = np.mean(np.array(null) >= 0.1 - 1e-12)
    assert sweep_correlation(runs, "label_noise", "alpha_mean").p == pytest.approx(exact)
    assert "p = 0.95" in text and "5 noise levels" in text


def test_several_seeds_per_level_count_runs_and_levels_and_ties_match_scipy() -> None:
    noises = [0.0, 0.0, 0.5, 0.5, 1.0, 1.0]
    alphas = [2.0, 2.2, 6.0, 5.0, 3.0, 3.3]
    runs = _runs([1.0] * 6, noises=noises, alphas=alphas)
    result = sweep_correlation(runs, "label_noise", "alpha_mean")
    assert result.rho == pytest.approx(spearmanr(noises, alphas).statistic)
    assert (result.runs, result.levels) == (6, 3)
    assert "6 runs at 3 noise levels" in trend(runs, "label_noise", "alpha_mean", levels_name="noise levels")


def test_two_levels_give_no_rank_correlation_rather_than_a_spurious_one() -> None:
    runs = _runs([1.0, 1.0], noises=[0.0, 1.0], alphas=[2.0, 3.0])
    assert trend(runs, "label_noise", "alpha_mean", levels_name="noise levels") == \
        "2 → 3 (no rank correlation: 2 noise levels)"


def test_runs_below_the_fit_threshold_are_flagged_in_the_headline_and_the_report(tmp_path: Path) -> None:
    # the quick study's runs: true labels fitted, 50 % and 100 % shuffled stopped at 0.54 and 0.16
    runs = _runs([0.999, 0.54, 0.16], noises=[0.0, 0.5, 1.0], alphas=[1.65, 1.95, 2.21])
    assert fitted_mask(runs).tolist() == [True, False, False]
    outputs = StudyOutputs(tmp_path)
    labels_module._headline(runs, outputs)
    values = {card["label"]: card["value"] for card in outputs.headline}
    for label in ("weights α: true → shuffled labels", "Jacobian λ_max: true → shuffled labels"):
        assert "did not fit their training labels: train acc 0.54 at 50% shuffled, 0.16 at 100% shuffled" \
            in values[label], values[label]
    assert values["weights α: true → shuffled labels"].startswith("1.65 → 2.21 (ρ = 1.00, p = 0.33, 3 noise")
    (caution,) = outputs.cautions
    assert "noise0.5_s0" in caution and "noise1_s0" in caution and "noise0_s0 " not in caution
    (tmp_path / "study.json").write_text(json.dumps({"study": "labels", "headline": outputs.headline,
                                                     "cautions": outputs.cautions}))
    page = render_report(collect_study(tmp_path))
    box = page[page.index("Read with care"):]
    box = box[:box.index("</section>")]
    assert "noise0.5_s0" in box and "noise1_s0" in box and f"below {FIT_THRESHOLD:g}" in box


def test_fitted_runs_get_no_note_and_the_report_no_box(tmp_path: Path) -> None:
    runs = _runs([1.0, 0.99, FIT_THRESHOLD], noises=[0.0, 0.5, 1.0], alphas=[1.65, 1.95, 2.21])
    outputs = StudyOutputs(tmp_path)
    labels_module._headline(runs, outputs)
    assert not any("did not fit" in card["value"] for card in outputs.headline)
    assert outputs.cautions == [] and unfit_caution(runs, str) is None
    (tmp_path / "study.json").write_text(json.dumps({"study": "labels", "headline": outputs.headline}))
    assert "Read with care" not in render_report(collect_study(tmp_path))


def test_a_study_writes_the_fitted_column_and_flags_its_unfit_runs_end_to_end(tmp_path: Path) -> None:
    # two epochs of a width-16 MLP on 200 digits: neither the true nor the random labels are fitted
    tiny = {"label_noises": [0.0, 1.0], "epochs": 2, "train_size": 200, "width": 16, "jacobian_n": 40,
            "hessian_n": 32, "hessian_top_k": 1}
    result = run_study(get_study("labels"), tmp_path, size="tiny", overrides=tiny)
    stored = pd.read_parquet(tmp_path / "runs.parquet")
    assert stored["fitted"].tolist() == [is_fitted(value) for value in stored["train_accuracy"]] == [False, False]
    assert all("did not fit" in card["value"] for card in result.headline[1:])
    meta = json.loads((tmp_path / "study.json").read_text())
    assert meta["cautions"] == list(result.cautions) and len(result.cautions) == 1
    page = (tmp_path / "report.html").read_text()
    assert "Read with care" in page and "noise1_s0 (100% shuffled" in page
