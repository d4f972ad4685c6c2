"""Data written as they are produced: resumable trajectory and force stores,
and systems that read their states in blocks."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from skmacro.sampling import sample_partial_forces
from skmacro.systems import AllenCahn, PredatorPrey

zarr = pytest.importorskip("zarr")


def test_forces_read_states_on_disk_in_blocks(system, pp_data, tmp_path):
    X = pp_data[0]
    z = zarr.create_array(
        store=str(tmp_path / "X.zarr"), shape=X.shape, chunks=(50, 100), dtype="f8"
    )
    z[:] = X
    np.testing.assert_array_equal(system.forces(z), system.forces(X))
    particles = np.arange(0, 100, 7)
    np.testing.assert_array_equal(
        system.partial_forces(z, particles), system.partial_forces(X, particles)
    )
    bad = X.copy()
    bad[3, 4] = np.inf
    with pytest.raises(ValueError, match="infinity"):
        system.forces(bad)


def test_simulate_writes_a_resumable_store(tmp_path):
    system = PredatorPrey()
    X0 = system.sample_initial(5, random_state=0)
    expected = system.simulate(X0, t_end=1.0, dt=0.01, stride=10)
    path = tmp_path / "traj.zarr"
    stored = system.simulate(X0, t_end=1.0, dt=0.01, stride=10, out=path)
    assert stored.shape == expected.shape and stored.dtype == np.float32
    np.testing.assert_allclose(stored[:], expected, rtol=1e-6)
    # The same call finds everything done; another call is refused.
    again = system.simulate(X0, t_end=1.0, dt=0.01, stride=10, out=path)
    np.testing.assert_array_equal(again[:], stored[:])
    with pytest.raises(ValueError, match="another call"):
        system.simulate(X0, t_end=2.0, dt=0.01, stride=10, out=path)
    # The same settings written as other numbers are the same call.
    again = system.simulate(X0, t_end=1, dt=0.01, stride=10.0, out=path)
    np.testing.assert_array_equal(again[:], stored[:])
    # Partial forces belong in a store of their own.
    X = expected.reshape(-1, system.n_features)
    with pytest.raises(ValueError, match="holds trajectories, not partial forces"):
        sample_partial_forces(system, X, 0.2, random_state=0, format="sparse", out=path)


def test_a_store_killed_while_being_created_is_completed(tmp_path):
    system = PredatorPrey()
    X0 = system.sample_initial(2, random_state=0)
    path = tmp_path / "traj.zarr"
    system.simulate(X0, t_end=0.1, dt=0.01, out=path)
    # As if killed after the fingerprint and the first array were written.
    del zarr.open_group(str(path), mode="a")["done"]
    stored = system.simulate(X0, t_end=0.1, dt=0.01, out=path)
    np.testing.assert_allclose(
        stored[:], system.simulate(X0, t_end=0.1, dt=0.01), rtol=1e-6
    )


def test_forces_of_no_states(system):
    assert system.forces(np.empty((0, system.n_features))).shape == (
        0,
        system.n_features,
    )


_KILLED_RUN = """
import sys
from skmacro.systems import AllenCahn
system = AllenCahn(n_grid=48)
X0 = system.sample_initial(12, random_state=0)
system.simulate(X0, t_end=100 / 48**2, method="rk4", out=sys.argv[1])
"""


def test_a_killed_simulation_resumes_where_it_stopped(tmp_path):
    system = AllenCahn(n_grid=48)
    X0 = system.sample_initial(12, random_state=0)
    settings = dict(t_end=100 / 48**2, method="rk4")
    reference = system.simulate(X0, **settings, out=tmp_path / "whole.zarr")

    path = tmp_path / "killed.zarr"
    script = tmp_path / "run.py"
    script.write_text(textwrap.dedent(_KILLED_RUN))
    process = subprocess.Popen([sys.executable, str(script), str(path)])
    deadline = time.monotonic() + 120
    done = 0
    while time.monotonic() < deadline and process.poll() is None:
        if (path / "done").exists():
            try:
                done = int(np.sum(zarr.open_group(str(path), mode="r")["done"][:]))
            except (KeyError, ValueError, OSError):
                done = 0
            if done >= 2:
                os.kill(process.pid, signal.SIGKILL)
                break
        time.sleep(0.01)
    process.wait()
    if done < 2 or done == len(X0):
        pytest.skip(f"could not kill the run midway ({done} of {len(X0)} stored)")
    partial = np.asarray(zarr.open_group(str(path), mode="r")["done"][:])
    assert 2 <= partial.sum() < len(X0)
    resumed = system.simulate(X0, **settings, out=path)
    np.testing.assert_array_equal(resumed[:], reference[:])
    assert np.all(zarr.open_group(str(path), mode="r")["done"][:])


def test_partial_forces_store_resumes_with_the_same_draws(system, pp_data, tmp_path):
    X = pp_data[0]
    expected = sample_partial_forces(system, X, 0.2, random_state=3, format="sparse")
    path = tmp_path / "forces.zarr"
    F = sample_partial_forces(system, X, 0.2, random_state=3, format="sparse", out=path)
    assert (F != expected).nnz == 0
    # Forget all but the first block, as if the run had been killed.
    done = zarr.open_group(str(path), mode="a")["done"]
    done[1:] = False
    F = sample_partial_forces(system, X, 0.2, random_state=3, format="sparse", out=path)
    assert (F != expected).nnz == 0
    # A NumPy integer seed is the same seed; other states of the same size,
    # or another seed, are another call.
    F = sample_partial_forces(
        system, X, 0.2, random_state=np.int64(3), format="sparse", out=path
    )
    assert (F != expected).nnz == 0
    with pytest.raises(ValueError, match="another call"):
        sample_partial_forces(
            system, X[::-1], 0.2, random_state=3, format="sparse", out=path
        )
    with pytest.raises(ValueError, match="another call"):
        sample_partial_forces(system, X, 0.2, random_state=4, format="sparse", out=path)
    with pytest.raises(ValueError, match="integer random_state"):
        sample_partial_forces(system, X, 0.2, format="sparse", out=tmp_path / "x")
    with pytest.raises(ValueError, match="format='sparse'"):
        sample_partial_forces(system, X, 0.2, random_state=0, out=tmp_path / "y")
