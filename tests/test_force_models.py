import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.exceptions import NotFittedError

from skmacro import ClosureAutoencoder, PartialForceDynamics
from skmacro.force_models import PairForceModel
from skmacro.forces import PartialForces
from skmacro.sampling import sample_partial_forces
from skmacro.statistics import ForceModelControl, partial_force_statistics
from skmacro.systems import LennardJones


@pytest.fixture(scope="module")
def lj_data():
    lj = LennardJones(n_atoms=108)
    X = lj.simulate(lj.sample_initial(3, random_state=0), t_end=0.03, stride=3)
    X = X.reshape(-1, X.shape[-1])
    F = sample_partial_forces(lj, X, p=0.1, random_state=0, format="sparse")
    return lj, X, F


def _relative_rms(a, b):
    return np.sqrt(np.mean((a - b) ** 2) / np.mean(b**2))


def test_pair_model_learns_the_lennard_jones_forces_from_partial_ones(lj_data):
    lj, X, F = lj_data
    model = lj.force_model().fit(X[::2], F[::2])
    assert model.relative_residual_ < 1e-2
    held_out = X[1::2]
    guess, true = model.predict(held_out), lj.forces(held_out)
    assert _relative_rms(guess, true) < 1e-2
    threaded = lj.force_model(n_jobs=2).fit(X[::2], F[::2])
    np.testing.assert_array_equal(threaded.predict(held_out), guess)
    # Position coordinates get dr/dt = v exactly.
    layout = (len(held_out), lj.n_atoms, 6)
    np.testing.assert_array_equal(
        guess.reshape(layout)[..., :3], held_out.reshape(layout)[..., 3:]
    )
    # A dense F with NaN where not computed gives the same fit.
    dense = np.full(F.shape, np.nan)
    coo = F.tocoo()
    dense[coo.row, coo.col] = coo.data
    np.testing.assert_allclose(
        lj.force_model().fit(X[::2], dense[::2]).coef_, model.coef_, rtol=1e-10
    )


def test_pair_model_errors(lj_data):
    lj, X, F = lj_data
    with pytest.raises(ValueError, match="exactly one of density"):
        PairForceModel(2.5, 6).fit(X, F)
    with pytest.raises(ValueError, match="not a multiple of particle_dim=6"):
        lj.force_model().fit(X[:, :-1], F[:, :-1])
    coo = F.tocoo()
    positions_only = coo.col % 6 < 3
    only_rates = sp.csr_array(
        (coo.data[positions_only], (coo.row[positions_only], coo.col[positions_only])),
        shape=F.shape,
    )
    with pytest.raises(ValueError, match="no computed force"):
        lj.force_model().fit(X, only_rates)
    with pytest.raises(ValueError, match="must exceed 2\\*r_cut"):
        lj.force_model(r_cut=4.0).fit(X, F)
    with pytest.raises(ValueError, match="n_basis. parameter of PairForceModel"):
        lj.force_model(n_basis=2).fit(X, F)
    with pytest.raises(NotFittedError):
        lj.force_model().predict(X)
    with pytest.raises(ValueError, match="expected 648"):
        lj.force_model().fit(X, F).predict(X[:, :600])


def test_force_model_control_never_uses_own_forces(lj_data):
    lj, X, F = lj_data
    forces = PartialForces(F, X.shape[1])
    control = ForceModelControl(lj.force_model(), X, forces, random_state=0)
    h = control.chunk(slice(0, 4))
    # Row 0's own forces do not enter its guess.
    changed = F.tolil()
    changed[0, changed.rows[0]] = 1e6
    changed = ForceModelControl(
        lj.force_model(), X, PartialForces(changed.tocsr(), X.shape[1]), random_state=0
    )
    np.testing.assert_array_equal(changed.chunk(slice(0, 1)), h[:1])
    assert _relative_rms(h, lj.forces(X[:4])) < 1e-2
    # A model without fit (a fixed physical one) is used as it is.
    fixed = ForceModelControl(_TrueForces(lj), X, forces)
    np.testing.assert_allclose(fixed.chunk(slice(0, 2)), lj.forces(X[:2]), rtol=1e-2)


def test_force_model_control_errors(lj_data):
    lj, X, F = lj_data
    forces = PartialForces(F, X.shape[1])
    with pytest.raises(ValueError, match="needs at least 2 of them, got 1"):
        ForceModelControl(lj.force_model(), X, forces, rows=[0])
    broken = ForceModelControl(_NaNForces(), X, forces)
    with pytest.raises(ValueError, match="guessed NaN or inf forces for 2 of 2"):
        broken.chunk(slice(0, 2))


class _NaNForces:
    def predict(self, X):
        return np.full(np.shape(X), np.nan)


class _TrueForces:
    def __init__(self, system):
        self.system = system

    def predict(self, X):
        return self.system.forces(X)


def test_pair_control_brings_partial_estimates_to_the_exact_velocities(lj_data):
    lj, X, F = lj_data
    ae = ClosureAutoencoder(
        observables=lj.observables, n_components=3, max_epochs=2, random_state=0
    ).fit(X)
    exact = partial_force_statistics(
        ae, X, PartialForces(lj.forces(X), X.shape[1]), "x"
    )["y"]
    forces = PartialForces(F, X.shape[1])
    plain = partial_force_statistics(ae, X, forces)["y"]
    control = ForceModelControl(lj.force_model(), X, forces, random_state=0)
    centred = partial_force_statistics(ae, X, forces, control=control)["y"]
    plain_error = (plain - exact).norm() / exact.norm()
    centred_error = (centred - exact).norm() / exact.norm()
    assert centred_error < 0.02 * plain_error
    # Through the estimator; the user's model stays unfitted.
    model = lj.force_model()
    dyn = PartialForceDynamics(
        control_variate=model, max_epochs=2, n_members=1, random_state=0
    ).fit(ae.transform(X), F)
    assert np.all(np.isfinite(dyn.predict(ae.transform(X[:2]))))
    assert not hasattr(model, "coef_")


def test_pair_control_on_a_dask_array(lj_data, capsys):
    da = pytest.importorskip("dask.array")
    lj, X, F = lj_data
    ae = ClosureAutoencoder(
        observables=lj.observables, n_components=3, max_epochs=1, random_state=0
    ).fit(X)
    forces = PartialForces(F, X.shape[1])
    control = ForceModelControl(lj.force_model(), X, forces, random_state=0)
    in_memory = partial_force_statistics(ae, X, forces, control=control)
    capsys.readouterr()
    lazy = partial_force_statistics(
        ae, da.from_array(X, chunks=(5, -1)), forces, control=control, progress=True
    )
    # dask's own bar over the blocks, on stderr.
    err = capsys.readouterr().err
    assert f"statistics pass: {len(X)} configurations in" in err
    assert "100% Completed" in err
    for key, value in in_memory.items():
        # float32 encoder: batches of other sizes round differently.
        np.testing.assert_allclose(
            lazy[key].numpy(), value.numpy(), rtol=1e-3, atol=1e-5
        )
