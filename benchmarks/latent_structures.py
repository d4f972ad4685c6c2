"""Robustness to the latent structure (the paper's Fig. 3 protocol) on the
Predator-Prey system: L_z vs L_x,p for the MLP, OnsagerNet and GFINN latent
models, on one force budget, over repeats.

Each repeat draws new training trajectories and masks and trains one
autoencoder shared by all six models. L_x,p (p = 1/5) sees partial forces on
every configuration; L_z sees all forces on one configuration in five (the
same number of force computations). Test error: unsquared Eq. 43 on
(u_mean, v_mean), 100 RK4 test trajectories, latent RK4 dt = 0.01. Writes a
box plot and prints a table; a rollout that diverges counts as an infinite
error and is reported.

    python benchmarks/latent_structures.py                  # 50 trajectories, 5 repeats
    python benchmarks/latent_structures.py --trajectories 20 --repeats 5
"""

import argparse
import time
from pathlib import Path

import numpy as np
from sklearn.pipeline import Pipeline

from skmacro import ClosureAutoencoder, PartialForceDynamics
from skmacro.paper import (
    predator_prey_test_trajectories,
    predator_prey_training_states,
    rollout_error,
)
from skmacro.sampling import sample_partial_forces
from skmacro.systems import PredatorPrey

MODELS = ("mlp", "onsager", "gfinn")
LOSSES = (("z", "L_z"), ("partial", "L_x,p"))


def run(n_trajectories, repeats, n_test, p):
    system = PredatorPrey()
    test = predator_prey_test_trajectories(n_test, random_state=1)
    errors = {(m, loss): [] for m in MODELS for loss, _ in LOSSES}
    seconds = {key: [] for key in errors}
    for repeat in range(repeats):
        X = predator_prey_training_states(n_trajectories, random_state=1000 + repeat)
        F_partial = sample_partial_forces(system, X, p=p, random_state=repeat)
        rng = np.random.default_rng(repeat)
        rows = np.sort(rng.choice(len(X), size=int(round(p * len(X))), replace=False))
        data = {"partial": (X, F_partial), "z": (X[rows], system.forces(X[rows]))}
        ae = ClosureAutoencoder(
            observables=system.observables, n_components=4, random_state=repeat
        ).fit(X)
        for model in MODELS:
            for loss, label in LOSSES:
                X_fit, F_fit = data[loss]
                dyn = PartialForceDynamics(
                    latent_model=model, loss=loss, random_state=repeat
                )
                start = time.perf_counter()
                dyn.fit(ae.transform(X_fit), F_fit)
                seconds[model, loss].append(time.perf_counter() - start)
                error = rollout_error(Pipeline([("ae", ae), ("dyn", dyn)]), *test)[0]
                errors[model, loss].append(error)
                print(
                    f"repeat {repeat} {model:<8} {label:<6} error {error:.3e} "
                    f"({seconds[model, loss][-1]:.0f} s)",
                    flush=True,
                )
    return errors, seconds


def report(errors, seconds, output):
    print("\nunsquared Eq. 43 error on (u_mean, v_mean), mean +- std over repeats")
    print(f"{'model':<10}{'L_z':>24}{'L_x,p':>24}{'fit s (L_x,p)':>16}")
    for model in MODELS:
        cells = []
        for loss, _ in LOSSES:
            values = np.asarray(errors[model, loss])
            finite = values[np.isfinite(values)]
            diverged = len(values) - len(finite)
            cell = f"{finite.mean():.2e} +- {finite.std():.1e}" if len(finite) else "-"
            cells.append(cell + (f" ({diverged} div.)" if diverged else ""))
        fit = np.mean(seconds[model, "partial"])
        print(f"{model:<10}{cells[0]:>24}{cells[1]:>24}{fit:>16.1f}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    labels, values = [], []
    for model in MODELS:
        for loss, label in LOSSES:
            finite = np.asarray(errors[model, loss])
            labels.append(f"{model}\n{label}")
            values.append(finite[np.isfinite(finite)])
    ax.boxplot(values, tick_labels=labels)
    ax.set_yscale("log")
    ax.set_ylabel("test error (unsquared Eq. 43)")
    ax.set_title("Predator-Prey: L_z vs L_x,p across latent structures")
    fig.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=120)
    print(f"box plot: {output}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trajectories", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--test-trajectories", type=int, default=100)
    parser.add_argument("--p", type=float, default=0.2)
    parser.add_argument("--output", default="outputs/latent_structures.png")
    args = parser.parse_args()
    errors, seconds = run(
        args.trajectories, args.repeats, args.test_trajectories, args.p
    )
    report(errors, seconds, Path(args.output))


if __name__ == "__main__":
    main()
