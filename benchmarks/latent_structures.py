"""Robustness to the latent structure (the paper's Fig. 3 protocol) on the
Predator-Prey system: L_z vs L_x,p for the MLP, OnsagerNet and GFINN latent
models, on one force budget, over repeats.

Each repeat draws new training trajectories and masks and trains one
autoencoder shared by all six models. L_x,p (p = 1/5) sees partial forces on
every configuration; L_z sees all forces on one configuration in five (the
same number of force computations). With ``--ceiling`` each model is also
fitted with L_z on all forces of every configuration: what the model class
reaches on the encoder with exact latent velocities everywhere. Test error:
unsquared Eq. 43 on (u_mean, v_mean), 100 RK4 test trajectories, latent RK4
dt = 0.01. Writes a box plot and prints a table; a rollout that diverges
counts as an infinite error and is reported.

    python benchmarks/latent_structures.py                  # 50 trajectories, 5 repeats
    python benchmarks/latent_structures.py --trajectories 20 --repeats 5
    python benchmarks/latent_structures.py --trajectories 30 --repeats 3 --ceiling
"""

import argparse
from pathlib import Path

import numpy as np

from skmacro.experiments import predator_prey
from skmacro.experiments.protocol import format_mean_std

LOSSES = (("z", "L_z"), ("partial", "L_x,p"), ("z_all", "L_z all forces"))


def report(errors, seconds, models, output):
    losses = [(loss, label) for loss, label in LOSSES if (models[0], loss) in errors]
    print("\nunsquared Eq. 43 error on (u_mean, v_mean), mean +- std over repeats")
    header = "".join(f"{label:>24}" for _, label in losses)
    print(f"{'model':<10}{header}{'fit s (L_x,p)':>16}")
    for model in models:
        cells = "".join(
            f"{format_mean_std(errors[model, loss]):>24}" for loss, _ in losses
        )
        fit = np.mean(seconds[model, "partial"])
        print(f"{model:<10}{cells}{fit:>16.1f}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    labels, values = [], []
    for model in models:
        for loss, label in losses:
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
    parser.add_argument("--models", nargs="+", default=["mlp", "onsager", "gfinn"])
    parser.add_argument(
        "--ceiling",
        action="store_true",
        help="also fit L_z on all forces of every configuration (1/p times the "
        "budget): what each latent model reaches with exact velocities",
    )
    parser.add_argument("--output", default="outputs/latent_structures.png")
    args = parser.parse_args()
    errors, seconds = predator_prey.latent_structures(
        args.trajectories,
        args.repeats,
        args.test_trajectories,
        args.p,
        args.models,
        ceiling=args.ceiling,
    )
    report(errors, seconds, args.models, Path(args.output))


if __name__ == "__main__":
    main()
