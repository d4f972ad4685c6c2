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
