from skmacro.cli import main


def test_main_job_quick_run(tmp_path, capsys):
    assert main(["predator-prey", "--quick", "--output-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "L_x,p (p=0.2)" in out and "L_z (all forces)" in out
    assert "paper (Table 1)" in out
    assert (tmp_path / "predator_prey_rollouts.png").stat().st_size > 10_000
