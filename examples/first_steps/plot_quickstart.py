"""
Quick start: Predator-Prey from partial forces
==============================================

A spatial predator-prey model is simulated on 50 grid cells (100 numbers
per state). We want the dynamics of two macroscopic observables only, the
mean prey and the mean predator population, and we can afford forces
(time derivatives) on just one grid value in five. This example trains a
closure autoencoder and a latent dynamics model on such partial forces,
then predicts the observables on new initial conditions.
"""

# %%
# Microscopic data and partial forces
# -----------------------------------
# :class:`~skmacro.systems.PredatorPrey` is the paper's system with its
# experiment defaults. Each training trajectory runs explicit Euler with
# ``dt = 0.01`` to ``t = 30`` and keeps every tenth state. Every row of ``X``
# is one configuration. :func:`~skmacro.sampling.sample_partial_forces`
# then computes forces on ``round(p * n)`` random grid values of each
# configuration (the paper's Algorithm 1) and leaves NaN elsewhere.
#
# ``SKMACRO_EXAMPLE_SIZE=tiny`` shrinks the example to a few seconds.
import os

import matplotlib.pyplot as plt
import numpy as np
from sklearn.pipeline import Pipeline

from skmacro import ClosureAutoencoder, PartialForceDynamics
from skmacro.metrics import rollout_error
from skmacro.plotting import plot_history, plot_observables
from skmacro.sampling import sample_partial_forces
from skmacro.systems import PredatorPrey

TINY = os.environ.get("SKMACRO_EXAMPLE_SIZE") == "tiny"
n_train = 3 if TINY else 20
epochs = {"max_epochs": 3} if TINY else {}
t_test = 4.9 if TINY else 29.9  # end of the test trajectories
dt_latent = 0.1 if TINY else 0.01  # step of the latent rollouts

system = PredatorPrey()
X0 = system.sample_initial(n_train, random_state=0)
traj = system.simulate(X0, t_end=30.0, dt=0.01, method="euler", stride=10)
X = traj.reshape(-1, system.n_features)  # (n_train * 301, 100)
groups = np.repeat(np.arange(n_train), traj.shape[1])  # trajectory of each row
F = sample_partial_forces(system, X, p=0.2, random_state=0)
print(f"X: {X.shape}; forces computed on {np.mean(~np.isnan(F)):.0%} of entries")

# %%
# A state is the prey ``u`` on the first 50 cells and the predators ``v`` on
# the next 50. Here are a few states of the first trajectory.
fig, ax = plt.subplots(figsize=(6, 3))
for k in (0, 50, 150, 300):
    ax.plot(system.grid, traj[0, k, :50], label=f"u, t = {k * 0.1:g}")
    ax.plot(system.grid, traj[0, k, 50:], "--", color=ax.lines[-1].get_color())
ax.set_xlabel("x")
ax.set_ylabel("population (solid: prey, dashed: predators)")
ax.legend(fontsize=7)
fig.tight_layout()

# %%
# The pipeline
# ------------
# The :class:`~skmacro.ClosureAutoencoder` keeps the observables (the two
# spatial means) as its first latent coordinates and learns two closure
# variables around them. :class:`~skmacro.PartialForceDynamics` then learns
# ``dz/dt = g(z)`` from the partial forces (the paper's loss ``L_x,p``).
# Both hold out whole trajectories for validation when given ``groups``.
# By default the dynamics model is an ensemble of three latent networks
# trained together on the same statistics (``n_members=3``); their spread
# is an uncertainty estimate (below).
pipe = Pipeline(
    [
        (
            "ae",
            ClosureAutoencoder(
                observables=system.observables,
                n_components=4,
                random_state=0,
                **epochs,
            ),
        ),
        ("dyn", PartialForceDynamics(random_state=0, **epochs)),
    ]
)
pipe.fit(X, F, ae__groups=groups, dyn__groups=groups)

fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
plot_history(pipe[0], ax=axes[0])
plot_history(pipe[1], ax=axes[1])
axes[0].set_yscale("log")
axes[1].set_yscale("log")
fig.tight_layout()

# %%
# Prediction on new initial conditions
# ------------------------------------
# The test trajectories are simulated with RK4 from initial states the
# model never saw. :func:`~skmacro.metrics.rollout_error` encodes them,
# rolls the learned dynamics out from their first states (latent RK4 with
# ``dt = 0.01``; coarser in tiny mode) and reports the paper's Eq. 43
# error on the observables.
X0_test = system.sample_initial(2 if TINY else 5, random_state=1)
test = system.simulate(X0_test, t_end=t_test, dt=0.01, method="rk4", stride=10)
t = np.arange(test.shape[1]) * 0.1
error, Z_true, Z_pred = rollout_error(pipe, t, test, dt=dt_latent)
print(f"test error (Eq. 43, unsquared norms): {error:.2e}")

fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
plot_observables(
    t,
    Z_true[0, :, :2],
    Z_pred[0, :, :2],
    names=["mean prey", "mean predators"],
    axes=axes,
)
fig.tight_layout()

# %%
# How sure is the model?
# ----------------------
# :func:`skmacro.simulate` rolls every member of the ensemble out with its
# own vector field and returns the mean trajectory; with
# ``return_std=True`` it also returns the members' spread.
# :func:`~skmacro.plotting.plot_observables` shades ``mean +- 2 std``. The
# band widens where the members disagree, typically where the training
# data were sparse; it measures the model's uncertainty, not the error of
# the partial-force estimate, so it is a hint, not a guarantee
# (:func:`skmacro.metrics.band_coverage` counts how often the truth falls
# inside it).
from skmacro import simulate
from skmacro.metrics import band_coverage

Z_mean, Z_std = simulate(pipe, X0_test, t, dt=dt_latent, return_std=True)
coverage = band_coverage(Z_true[..., :2], Z_mean[..., :2], Z_std[..., :2])
print(f"fraction of true observables inside the 2-std band: {coverage:.0%}")
fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
plot_observables(
    t,
    Z_true[0, :, :2],
    Z_mean[0, :, :2],
    z_std=Z_std[0, :, :2],
    names=["mean prey", "mean predators"],
    axes=axes,
    label="ensemble mean",
)
fig.tight_layout()

# %%
# Scoring without ground truth
# ----------------------------
# A rollout error needs true trajectories. ``pipe.score`` needs only partial
# forces: it is the R² of the observables' velocity against its unbiased
# estimate from the computed forces, fair across pipelines with different
# encoders (see the user guide). It is what ``GridSearchCV`` uses by default.
F_test = sample_partial_forces(
    system, test.reshape(-1, system.n_features), p=0.2, random_state=1
)
score = pipe.score(test.reshape(-1, system.n_features), F_test)
print(f"p-aware score on the test states: {score:.3f}")
