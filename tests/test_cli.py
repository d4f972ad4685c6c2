import pytest

from skmacro.cli import main


def test_main_job_quick_run(tmp_path, capsys):
    assert main(["predator-prey", "--quick", "--output-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "L_x,p (p=0.2)" in out and "L_z (all forces)" in out
    assert "paper (Table 1)" in out
    assert (tmp_path / "predator_prey_rollouts.png").stat().st_size > 10_000


@pytest.mark.slow
def test_main_job_beats_the_paper_on_its_force_budget(tmp_path):
    """The README's main job at the paper's size: L_x,p below the paper's
    Table 1 figure and below L_z on the same number of force computations."""
    from skmacro.cli import run_predator_prey
    from skmacro.experiments.published import TABLE1

    result = run_predator_prey(output_dir=tmp_path, verbose=0)
    errors = result["errors"]
    assert errors["partial"] < TABLE1["predator_prey"]["partial"][0]
    assert errors["partial"] < errors["z"]
    forces = result["force_computations"]
    assert forces["partial"] == forces["z"] == 300_000


def test_allen_cahn_job_pools_encoders_and_resumes(tmp_path, capsys):
    from skmacro.cli import run_allen_cahn

    def run():
        return run_allen_cahn(
            n_grid=16,
            n_train=4,
            n_test=1,
            latent_dim=3,
            n_encoders=2,
            checkpoint=tmp_path / "fits",
            ae_params={"max_epochs": 2},
            dyn_params={"max_epochs": 2, "n_members": 1, "validation_fraction": None},
            verbose=0,
        )

    first = run()
    printed = capsys.readouterr().out
    assert sorted(first["pooled_errors"]) == ["partial", "z"]
    rows = [line for line in printed.splitlines() if line.startswith("  pooled")]
    assert len(rows) == 2 and all("of 2 members" in row for row in rows)
    again = run()
    assert capsys.readouterr().out.count("loaded from") == 6  # 2 encoders, 2 fits each
    assert again["pooled_errors"] == first["pooled_errors"]
