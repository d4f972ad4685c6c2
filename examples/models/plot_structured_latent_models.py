"""
Structure-preserving latent models: OnsagerNet and GFINN
========================================================

``PartialForceDynamics(latent_model=...)`` offers three vector fields
``dz/dt = g(z)``:

* ``"mlp"``: an unconstrained network;
* ``"onsager"`` (OnsagerNet): ``dz/dt = -(M + W) grad V`` with ``M``
  positive definite, ``W`` antisymmetric and a potential ``V`` bounded
  below, so that ``V`` never increases along a trajectory and rollouts stay
  bounded, for any weights;
* ``"gfinn"`` (GENERIC-formalism informed network): ``dy/dt = L grad E +
  M grad S`` with degeneracy conditions built in, so that the energy ``E``
  is conserved and the entropy ``S`` never decreases. By default the state
  is ``y = (z, sigma)``, with ``sigma`` the energy of a heat bath that takes
  up what the observables lose; then the free energy ``E(z) - T S(z)``
  never increases along a rollout of ``z``.

This example trains all three on the same encoder and forces, rolls them
out well past the training horizon, and evaluates the structured models'
potentials along their own trajectories: the guarantees are visible there.
"""

# %%
# One encoder, three latent models
# --------------------------------
import os

import matplotlib.pyplot as plt
import numpy as np
import torch
from sklearn.pipeline import Pipeline

from skmacro import ClosureAutoencoder, PartialForceDynamics, simulate
from skmacro.sampling import sample_partial_forces
from skmacro.systems import PredatorPrey

TINY = os.environ.get("SKMACRO_EXAMPLE_SIZE") == "tiny"
n_train = 3 if TINY else 20
epochs = {"max_epochs": 3} if TINY else {}
horizon = 10.0 if TINY else 90.0  # end of the rollouts
dt_latent = 0.1 if TINY else 0.05  # step of the latent rollouts

system = PredatorPrey()
traj = system.simulate(
    system.sample_initial(n_train, random_state=0),
    t_end=30.0,
    dt=0.01,
    method="euler",
    stride=10,
)
X = traj.reshape(-1, system.n_features)
F = sample_partial_forces(system, X, p=0.2, random_state=0)
ae = ClosureAutoencoder(
    observables=system.observables,
    n_components=4,
    max_epochs=3 if TINY else 30,
    random_state=0,
).fit(X)
Z = ae.transform(X)

pipes = {}
for name in ("mlp", "onsager", "gfinn"):
    dyn = PartialForceDynamics(latent_model=name, random_state=0, **epochs)
    pipes[name] = Pipeline([("ae", ae), ("dyn", dyn.fit(Z, F))])

# %%
# Rollouts beyond the training horizon
# ------------------------------------
# Training states cover ``t`` in [0, 30]; the rollouts run to ``t = 90``
# (10 at the tiny size).
# A rollout that diverges is kept as NaN from there on. Each model is an
# ensemble of three members (the default); ``return_members=True`` keeps
# every member's own trajectory besides their mean.
x0 = system.sample_initial(1, random_state=7)
t = np.arange(0.0, horizon, 0.1)
truth = system.simulate(x0, t_end=t[-1], dt=0.01, method="rk4", stride=10)[0]
z_true = np.asarray(ae.transform(truth))
rollouts, members = {}, {}
for name, pipe in pipes.items():
    z_mean, z_members = simulate(
        pipe, x0, t, dt=dt_latent, on_divergence="mask", return_members=True
    )
    rollouts[name], members[name] = z_mean[0], z_members[:, 0]
fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
for col, label in enumerate(("mean prey", "mean predators")):
    axes[col].plot(t, z_true[:, col], "k", lw=1.5, label="true")
    for name, z in rollouts.items():
        axes[col].plot(t, z[:, col], "--", label=name)
    axes[col].axvspan(30, max(30, horizon), color="0.93", zorder=0)
    axes[col].set_xlabel("t (shaded: beyond the training horizon)")
    axes[col].set_ylabel(label)
axes[0].legend(fontsize=8)
fig.tight_layout()

# %%
# The guarantees along a rollout
# ------------------------------
# The fitted latent model is ``dyn.module_``: its ``field`` is a
# :class:`~skmacro.nn.VectorFieldEnsemble` whose members work on
# standardised coordinates ``(z - z_mean) / z_scale``; the change of
# variables keeps their structure. Each member carries its own guarantee
# along its own trajectory (the mean of the members' trajectories need not
# obey it): OnsagerNet's potential ``V`` must not increase. GFINN's energy
# ``E(z)`` falls as the bath takes it up (the bath's energy rises by as
# much, so the total stays constant), and its free energy ``F = E - T S``
# must not increase. Here, along the first member's trajectory:


def along(pipe, z, function, member=0):
    """A scalar function of one member's standardised coordinates, evaluated
    along that member's latent trajectory z of shape (T, d)."""
    module = pipe[-1].module_
    field = module.field.member(member)
    z = torch.as_tensor(z[np.isfinite(z).all(axis=1)])
    with torch.no_grad():
        return function(field, (z - module.z_mean) / module.z_scale).numpy()


V = along(pipes["onsager"], members["onsager"][0], lambda f, z: f.potential(z))
E = along(pipes["gfinn"], members["gfinn"][0], lambda f, z: f.energy(z))
F = along(pipes["gfinn"], members["gfinn"][0], lambda f, z: f.free_energy(z))
# Up to the integrator's error: the one-step changes of V and F are <= 0.
print(f"OnsagerNet: largest one-step change of V {np.diff(V).max():+.2e}")
print(f"GFINN: energy given to the bath {E[0] - E[-1]:+.2e}")
print(f"GFINN: largest one-step change of F {np.diff(F).max():+.2e}")

fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
axes[0].plot(t[: len(V)], V)
axes[0].set_title("OnsagerNet: potential V (non-increasing)")
axes[1].plot(t[: len(E)], E)
axes[1].set_title("GFINN: energy E(z) (the rest is the bath's)")
axes[2].plot(t[: len(F)], F)
axes[2].set_title("GFINN: free energy E - T S (non-increasing)")
for ax in axes:
    ax.set_xlabel("t")
fig.tight_layout()

# %%
# The structure constrains the model, not the data: whether the learned
# ``V``, ``E`` or ``S`` means anything physical depends on the system. What
# it buys is stability: neither an OnsagerNet rollout nor a GFINN rollout
# with its bath can blow up, whatever happens past the data it was trained
# on (each stays where its ``V`` or ``F`` is below its starting value, a
# bounded set).
