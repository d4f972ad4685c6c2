import pytest
import torch
from sklearn.pipeline import Pipeline

from skmacro import ClosureAutoencoder, PartialForceDynamics
from skmacro.sampling import sample_partial_forces
from skmacro.systems import PredatorPrey


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def system():
    return PredatorPrey()


@pytest.fixture(scope="session")
def pp_data(system):
    """A small Predator-Prey training set: 6 Euler trajectories to t = 10."""
    X0 = system.sample_initial(6, random_state=0)
    X = system.simulate(X0, t_end=10.0, dt=0.01, method="euler", stride=10)
    X = X.reshape(-1, system.n_features)
    F = sample_partial_forces(system, X, p=0.2, random_state=0)
    return X, F


@pytest.fixture(scope="session")
def fitted_ae(system, pp_data):
    X, _ = pp_data
    return ClosureAutoencoder(
        observables=system.observables, n_components=4, max_epochs=3, random_state=0
    ).fit(X)


@pytest.fixture(scope="session")
def make_pipe(system):
    """Factory of small ``Pipeline([("ae", ...), ("dyn", ...)])`` for the
    Predator-Prey system: ``make_pipe(ae_epochs=3, dyn_epochs=5, **dyn)``."""

    def make(ae_epochs=3, dyn_epochs=5, **dyn):
        ae = ClosureAutoencoder(
            observables=system.observables,
            n_components=4,
            max_epochs=ae_epochs,
            random_state=0,
        )
        dyn = PartialForceDynamics(max_epochs=dyn_epochs, random_state=0, **dyn)
        return Pipeline([("ae", ae), ("dyn", dyn)])

    return make
