"""
Save, load and continue training
================================

A fitted pipeline is a scikit-learn object: ``joblib.dump`` saves it and
``joblib.load`` brings it back, on another machine too (a model trained on
a GPU loads on a CPU-only machine). Training can then go on: more epochs on
the same data (``warm_start``), or new data as it arrives (``partial_fit``).

.. warning::

   ``joblib`` and ``pickle`` files run code when they are loaded. Load only
   files you trust, from sources you trust; never a model file downloaded
   from an unknown place or received from a stranger.
"""

# %%
# Fit and save
# ------------
import os
import shutil
import tempfile
from pathlib import Path

import joblib
import matplotlib.pyplot as plt
import numpy as np
from sklearn.pipeline import Pipeline

from skmacro import ClosureAutoencoder, PartialForceDynamics
from skmacro.metrics import rollout_error
from skmacro.plotting import plot_history
from skmacro.sampling import sample_partial_forces
from skmacro.systems import PredatorPrey

TINY = os.environ.get("SKMACRO_EXAMPLE_SIZE") == "tiny"
n_train = 3 if TINY else 10
epochs = 3 if TINY else 40  # per call to fit or partial_fit

system = PredatorPrey()


def make_data(n, seed):
    """n Euler training trajectories (rows) and their partial forces."""
    traj = system.simulate(
        system.sample_initial(n, random_state=seed),
        t_end=30.0,
        dt=0.01,
        method="euler",
        stride=10,
    )
    X = traj.reshape(-1, system.n_features)
    return X, sample_partial_forces(system, X, p=0.2, random_state=seed)


X, F = make_data(n_train, seed=0)
test = system.simulate(
    system.sample_initial(2 if TINY else 5, random_state=100),
    4.9 if TINY else 29.9,
    0.01,
    method="rk4",
    stride=10,
)
t = np.arange(test.shape[1]) * 0.1

pipe = Pipeline(
    [
        (
            "ae",
            ClosureAutoencoder(
                observables=system.observables,
                n_components=4,
                max_epochs=3 if TINY else 30,
                random_state=0,
            ),
        ),
        ("dyn", PartialForceDynamics(max_epochs=epochs, random_state=0)),
    ]
).fit(X, F)
print(f"test error after {epochs} epochs: {rollout_error(pipe, t, test)[0]:.2e}")
ends = [pipe[-1].history_[-1, "epoch"]]  # epoch count at the end of each call

folder = Path(tempfile.mkdtemp())
joblib.dump(pipe, folder / "pipeline.joblib")
print(f"saved: {(folder / 'pipeline.joblib').stat().st_size / 1e3:.0f} kB")

# %%
# Load
# ----
# The observables travel with the model by reference: a system's method or
# a module-level function must be importable where the file is loaded.
loaded = joblib.load(folder / "pipeline.joblib")
shutil.rmtree(folder)  # this example's temporary copy
np.testing.assert_array_equal(loaded.predict(X[:10]), pipe.predict(X[:10]))

# %%
# More epochs on the same data
# ----------------------------
# With ``warm_start=True``, ``fit`` continues from the current weights with
# a fresh learning-rate schedule from the current ``lr``, and the history
# grows; the encoder is left as it is, so the dynamics is fitted
# on its latent coordinates directly.
dyn = loaded[-1].set_params(warm_start=True)
dyn.fit(loaded[0].transform(X), F)
ends.append(dyn.history_[-1, "epoch"])
print(f"{ends[-1]} epochs in all")
print(f"test error after more epochs: {rollout_error(loaded, t, test)[0]:.2e}")

# %%
# New data
# --------
# ``partial_fit`` trains ``max_epochs`` more epochs on whatever it is given,
# here five new trajectories.
X_new, F_new = make_data(3 if TINY else 5, seed=1)
dyn.partial_fit(loaded[0].transform(X_new), F_new)
print(f"test error after new data: {rollout_error(loaded, t, test)[0]:.2e}")

fig, ax = plt.subplots(figsize=(6, 3.4))
plot_history(dyn, ax=ax)
for boundary in ends:
    ax.axvline(boundary, color="k", lw=0.8, ls="--")
ax.set_yscale("log")
ax.set_title("first fit | warm start | partial_fit on new data")
fig.tight_layout()

# %%
# The kept parameters are those of the best validation evaluation of each
# call (the dotted lines mark the last call's, one per ensemble member). To
# continue the autoencoder as well, set ``ae__warm_start=True`` and refit
# the whole pipeline; the latent coordinates then change and the dynamics
# should be refitted on them.
