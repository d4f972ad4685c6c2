"""``skmacro reproduce``: every table and figure of the paper at the smoke
scale, and the rollout scorer that Table 3's search uses."""

import csv

import numpy as np
import pytest
from sklearn.model_selection import GridSearchCV, PredefinedSplit

from skmacro.cli import main
from skmacro.experiments import published
from skmacro.experiments.protocol import format_mean_std
from skmacro.experiments.reproduce import TARGETS, _size_to_reach, reproduce
from skmacro.metrics import make_rollout_scorer, rollout_error
from skmacro.sampling import sample_partial_forces


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


def _mean_std(pair):
    return f"{pair[0]:.2e} +- {pair[1]:.1e}"


#: What each target's table must print of the paper.
PAPER_TEXT = {
    "table1": [_mean_std(v) for row in published.TABLE1.values() for v in row.values()],
    "table2": [_mean_std(v) for v in published.TABLE2[600].values()],
    "fig2": [_mean_std(v) for v in published.TABLE2[600].values()],
    "table3": [f"{published.TABLE3[0.0]:.2e}", f"{published.TABLE3[1e-6]:.2e}"],
    "fig3": [_mean_std(v) for row in published.FIG3.values() for v in row.values()],
    "fig4": ["drawn, not printed", "e_tol = 0.003 at 800, 2700, 6400, 21600"],
    "fig6": ["curves only"],
}


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_every_target_runs_at_smoke_scale(target, tmp_path, cache):
    lines = []
    done = reproduce(
        target, "smoke", output_dir=tmp_path, cache_dir=cache, log=lines.append
    )
    printed = "\n".join(lines)
    # Progress first, then the table beside the paper's numbers.
    assert printed.index("scale smoke") < printed.index(done.table)
    lines = done.table.splitlines()
    rule = next(i for i, line in enumerate(lines) if line.startswith("-"))
    assert "paper" in lines[rule - 1]  # the first table's header
    for text in PAPER_TEXT[target]:
        assert text in done.table, text
    assert done.figure.stat().st_size > 10_000
    with open(done.csv) as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == len(done.rows) > 0
    assert not any(key.startswith("_") for key in rows[0])
    assert all(
        float(r["error_mean" if "error_mean" in r else "error"]) > 0 for r in rows
    )


def test_command_line_and_its_help(tmp_path, cache, capsys):
    with pytest.raises(SystemExit):
        main(["reproduce", "--help"])
    help_text = capsys.readouterr().out
    for name, target in TARGETS.items():
        assert name in help_text and target.runs["small"][:30] in help_text
    argv = ["reproduce", "fig4", "--scale", "smoke", "--output-dir", str(tmp_path)]
    assert main(argv + ["--cache-dir", str(cache)]) == 0
    out = capsys.readouterr().out
    assert "Force computations to reach e_tol" in out
    assert (tmp_path / "fig4.csv").exists() and (tmp_path / "fig4.png").exists()
    with pytest.raises(ValueError, match="did you mean 'table1'"):
        reproduce("tabel1", "smoke")
    with pytest.raises(ValueError, match="control_variate"):
        reproduce("table1", "smoke", control_variate="neighbours")
    with pytest.raises(ValueError, match="scale"):
        reproduce("table1", "huge")


def test_rollout_scorer_is_the_negative_rollout_error(system, pp_data, make_pipe):
    X, F = pp_data
    pipe = make_pipe(2, 5).fit(X, F)
    test = system.simulate(
        system.sample_initial(3, random_state=5), t_end=2.0, dt=0.01, stride=10
    )
    t = np.arange(test.shape[1]) * 0.1
    scorer = make_rollout_scorer(t, dt=0.01)
    rows = test.reshape(-1, system.n_features)
    expected = rollout_error(pipe, t, test, dt=0.01)[0]
    assert scorer(pipe, rows) == pytest.approx(-expected)
    squared = make_rollout_scorer(t, dt=0.01, squared=True)(pipe, rows)
    assert squared == pytest.approx(-rollout_error(pipe, t, test, 0.01, True)[0])
    with pytest.raises(ValueError, match="whole trajectories"):
        scorer(pipe, rows[:-1])
    with pytest.raises(TypeError, match="Pipeline"):
        scorer(pipe[-1], rows)
    with pytest.raises(ValueError, match="strictly increasing"):
        make_rollout_scorer(t[::-1])


def test_rollout_error_reads_test_trajectories_from_a_zarr_array(
    system, pp_data, make_pipe, tmp_path
):
    zarr = pytest.importorskip("zarr")
    X, F = pp_data
    pipe = make_pipe(2, 5).fit(X, F)
    test = system.simulate(
        system.sample_initial(2, random_state=5), t_end=1.0, dt=0.01, stride=10
    ).astype(np.float32)
    stored = zarr.open_array(
        str(tmp_path / "test.zarr"), mode="w", shape=test.shape, dtype=test.dtype
    )
    stored[:] = test
    t = np.arange(test.shape[1]) * 0.1
    error, Z_true, _ = rollout_error(pipe, t, stored, dt=0.01)
    expected, Z_expected, _ = rollout_error(pipe, t, test, dt=0.01)
    assert error == pytest.approx(expected)
    np.testing.assert_array_equal(Z_true, Z_expected)


def test_rollout_scorer_in_a_search_with_a_predefined_split(system, make_pipe):
    """The test fold holds whole test trajectories; the search's score for a
    candidate is minus its rollout error on them, whatever the others do."""
    from sklearn.base import clone

    from skmacro.experiments.predator_prey import training_states

    X_train = training_states(3, random_state=0)
    test = system.simulate(
        system.sample_initial(2, random_state=1), t_end=4.9, dt=0.01, stride=10
    )
    t = np.arange(test.shape[1]) * 0.1
    X_test = test.reshape(-1, system.n_features)
    X = np.concatenate([X_train, X_test])
    F = np.concatenate(
        [
            sample_partial_forces(system, X_train, 0.2, random_state=0),
            np.full(X_test.shape, np.nan),  # never read by the rollout score
        ]
    )
    fold = np.r_[np.full(len(X_train), -1), np.zeros(len(X_test), dtype=int)]
    base = make_pipe(2, 4)
    search = GridSearchCV(
        base,
        {"ae__lambda_cond": [0.0, 1e-2]},
        cv=PredefinedSplit(fold),
        scoring=make_rollout_scorer(t, dt=0.01),
        refit=False,
    ).fit(X, F)
    for i, lam in enumerate([0.0, 1e-2]):
        pipe = (
            clone(base).set_params(ae__lambda_cond=lam).fit(X_train, F[: len(X_train)])
        )
        error = rollout_error(pipe, t, test, dt=0.01)[0]
        assert search.cv_results_["mean_test_score"][i] == pytest.approx(
            -error, rel=1e-5
        )


def test_a_single_run_prints_no_spread_and_diverged_runs_are_counted():
    assert format_mean_std([1.5e-3]) == "1.50e-03"
    assert format_mean_std([1e-3, 3e-3]) == "2.00e-03 +- 1.0e-03"
    assert format_mean_std([1e-3, np.nan]) == "1.00e-03 (1 div.)"
    assert format_mean_std([]) == "-"


def test_data_to_reach_a_tolerance_is_interpolated_in_log_log():
    points = [(6000, 1e-3), (600, 1e-2)]
    assert _size_to_reach(points, np.sqrt(1e-5)) == pytest.approx(np.sqrt(600 * 6000))
    assert _size_to_reach(points, 2e-2) == 600
    assert _size_to_reach(points, 1e-4) is None
