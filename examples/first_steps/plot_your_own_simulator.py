"""
Your own simulator
==================

skmacro needs no system class of its own: arrays of states and of the
forces you computed are enough. This example brings a simulator that the
library does not ship, written here in plain NumPy: a damped chain of
anharmonic oscillators (a Fermi-Pasta-Ulam-Tsingou chain with friction).
Each particle has two coordinates, its displacement ``q_i`` and momentum
``p_i``, and the force on particle ``i`` depends on its two neighbours only,
so forces on a few particles cost a few neighbour look-ups. The
observables are the chain's energy, which friction dissipates,
and its mean displacement, which oscillates.

What you provide, and what this example shows:

* states ``X`` of shape ``(K, N)``, particle-major: ``N = n * m`` with
  ``m = 2`` coordinates per particle, ``X[:, 2*i]`` the displacement and
  ``X[:, 2*i + 1]`` the momentum of particle ``i``;
* the observables as a torch function of a batch of states;
* forces on the particles you chose, for every coordinate of each chosen
  particle, as a sparse CSR matrix (or dense with a particle-level mask).
"""

# %%
# The microscopic model
# ---------------------
# ``dq_i/dt = p_i`` and ``dp_i/dt = (q_{i+1} - 2 q_i + q_{i-1}) +
# beta ((q_{i+1} - q_i)^3 - (q_i - q_{i-1})^3) - gamma p_i``, with fixed
# ends ``q_0 = q_{n+1} = 0``. The chain starts at rest in its lowest mode
# with a random amplitude.
import os

import matplotlib.pyplot as plt
import numpy as np
import scipy.sparse as sp
import torch
from sklearn.pipeline import Pipeline

from skmacro import ClosureAutoencoder, PartialForceDynamics
from skmacro.metrics import rollout_error
from skmacro.plotting import plot_observables

TINY = os.environ.get("SKMACRO_EXAMPLE_SIZE") == "tiny"
N_PARTICLES, M = 32, 2  # particles, coordinates per particle
BETA, GAMMA = 1.0, 0.02
N = N_PARTICLES * M


def chain_forces(X):
    """All forces dx/dt, (K, N) -> (K, N), particle-major."""
    q, p = X[:, 0::2], X[:, 1::2]
    padded = np.pad(q, ((0, 0), (1, 1)))  # fixed ends
    right, left = padded[:, 2:] - q, q - padded[:, :-2]
    F = np.empty_like(X)
    F[:, 0::2] = p
    F[:, 1::2] = right - left + BETA * (right**3 - left**3) - GAMMA * p
    return F


def chain_partial_forces(X, particles):
    """Forces on the given particles only: (K, N) and (K, k) -> (K, k, 2).

    Reads each chosen particle and its two neighbours: the cost grows with
    k, not with the length of the chain."""
    rows = np.arange(len(X))[:, None]
    q, p = X[:, 0::2], X[:, 1::2]
    q_i = q[rows, particles]
    q_left = np.where(particles > 0, q[rows, np.maximum(particles - 1, 0)], 0.0)
    last = N_PARTICLES - 1
    q_right = np.where(particles < last, q[rows, np.minimum(particles + 1, last)], 0.0)
    right, left = q_right - q_i, q_i - q_left
    p_i = p[rows, particles]
    acc = right - left + BETA * (right**3 - left**3) - GAMMA * p_i
    return np.stack([p_i, acc], axis=-1)


def simulate(X0, t_end, dt=0.05, stride=10):
    """RK4 trajectories, (n, N) -> (n, T, N), a state every stride steps."""
    x, kept = X0.copy(), [X0.copy()]
    for step in range(1, int(round(t_end / dt)) + 1):
        k1 = chain_forces(x)
        k2 = chain_forces(x + 0.5 * dt * k1)
        k3 = chain_forces(x + 0.5 * dt * k2)
        k4 = chain_forces(x + dt * k3)
        x = x + dt / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        if step % stride == 0:
            kept.append(x.copy())
    return np.stack(kept, axis=1)


def initial_states(n, rng):
    """At rest in the lowest mode, amplitude uniform in [0.5, 1.5]."""
    i = np.arange(1, N_PARTICLES + 1)
    amplitude = rng.uniform(0.5, 1.5, size=(n, 1))
    X0 = np.zeros((n, N))
    X0[:, 0::2] = amplitude * np.sin(np.pi * i / (N_PARTICLES + 1))
    return X0


rng = np.random.default_rng(0)
n_train = 4 if TINY else 40
train = simulate(initial_states(n_train, rng), t_end=60.0)  # (n_train, 121, 64)
X = train.reshape(-1, N)
groups = np.repeat(np.arange(n_train), train.shape[1])

# %%
# The observables, as a torch function
# ------------------------------------
# The encoder differentiates the observables with torch, so they are written
# with torch operations on a batch ``(B, N) -> (B, d*)``, acting row by row.
# A module-level function (not a lambda) keeps the fitted model picklable.


def chain_observables(X):
    """Total energy and mean displacement, (B, N) -> (B, 2)."""
    q, p = X[:, 0::2], X[:, 1::2]
    bonds = torch.diff(torch.nn.functional.pad(q, (1, 1)), dim=1)
    kinetic = 0.5 * p.square().sum(dim=1)
    potential = (0.5 * bonds.square() + 0.25 * BETA * bonds**4).sum(dim=1)
    return torch.stack([kinetic + potential, q.mean(dim=1)], dim=1)


# %%
# The encoder needs the observables' Jacobian to have full rank on the data.
# The kinetic energy alone would be a poor choice here: its gradient is the
# momentum, which vanishes whenever the chain is momentarily at rest.
#
# Units matter too. The energy is summed over the chain, not averaged: the
# energy per particle has a gradient 32 times shorter, so the encoder's
# Jacobian is ill-conditioned, and when this example averaged it the
# closure variables collapsed to constants and the rollouts failed. The
# user guide's section on ``lambda_cond`` says more.


# %%
# Partial forces: your own sampling
# ---------------------------------
# For each configuration draw ``k`` of the ``n`` particles uniformly without
# replacement (every particle then has inclusion probability ``p = k / n``),
# compute their forces, and store them in a CSR matrix whose stored entries
# are exactly the computed coordinates: both coordinates of each chosen
# particle (columns ``2 i`` and ``2 i + 1``). A computed force that happens
# to be zero is stored explicitly; ``.eliminate_zeros()`` would lose it.
k = 4  # forces on 4 of 32 particles: p = 1/8
K = len(X)
chosen = np.sort(rng.permuted(np.tile(np.arange(N_PARTICLES), (K, 1)), axis=1)[:, :k])
values = chain_partial_forces(X, chosen)  # (K, k, 2)
columns = (chosen[:, :, None] * M + np.arange(M)).reshape(K, k * M)
F = sp.csr_array(
    (values.ravel(), columns.ravel(), np.arange(K + 1) * k * M), shape=(K, N)
)
print(f"{K} configurations, {F.nnz} computed force coordinates ({F.nnz / K:g} each)")

# %%
# The same data as a dense array with a particle-level mask: zeros (or
# anything) where nothing was computed, and ``mask[s, i]`` true where the
# forces of particle ``i`` of configuration ``s`` were. ``PartialForceDynamics``
# expands a ``(K, n)`` mask to the ``m`` coordinates of each particle.
mask = np.zeros((K, N_PARTICLES), dtype=bool)
mask[np.arange(K)[:, None], chosen] = True
F_dense = F.toarray()

# %%
# Train
# -----
# Two observables and two closure variables. The p inferred from the data
# (the observed fraction of coordinates) is ``k / n``.
epochs = {"max_epochs": 3} if TINY else {}
pipe = Pipeline(
    [
        (
            "ae",
            ClosureAutoencoder(
                observables=chain_observables,
                observable_names=["energy", "mean displacement"],
                n_components=4,
                random_state=0,
                **epochs,
            ),
        ),
        ("dyn", PartialForceDynamics(random_state=0, **epochs)),
    ]
)
pipe.fit(X, F, ae__groups=groups, dyn__groups=groups)

# Both encodings of the forces describe the same data, hence the same model.
Z = pipe[0].transform(X)
dense_fit = PartialForceDynamics(max_epochs=2, random_state=0).fit(
    Z, F_dense, mask=mask
)
sparse_fit = PartialForceDynamics(max_epochs=2, random_state=0).fit(Z, F)
print(
    "dense + mask and sparse give the same model:",
    np.allclose(dense_fit.predict(Z[:50]), sparse_fit.predict(Z[:50]), rtol=1e-4),
)

# %%
# Predict new trajectories
# ------------------------
test = simulate(initial_states(3, np.random.default_rng(1)), t_end=60.0)
t = np.arange(test.shape[1]) * 0.5
error, Z_true, Z_pred = rollout_error(pipe, t, test, dt=0.05)
print(f"test error (Eq. 43, unsquared): {error:.2e}")
fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
plot_observables(
    t,
    Z_true[0, :, :2],
    Z_pred[0, :, :2],
    names=["energy", "mean displacement"],
    axes=axes,
)
fig.tight_layout()

# %%
# Plugging in an external force calculator
# -----------------------------------------
# Nothing above depends on where the forces come from: a molecular dynamics
# code, a DFT package or a PDE solver can fill ``values`` (one row of ``k``
# particles per configuration, ``m`` numbers per particle) for the particles
# you chose. Keep the choice uniform (or pass the inclusion probabilities you
# used, ``fit(..., inclusion_proba=...)``) so that the loss stays an unbiased
# estimate of the full-force loss.
