"""Predator-Prey: the paper's Table 2 and the cost of a default fit.

Part 1 times ``Pipeline.fit`` with the estimators' default hyper-parameters
on the paper's reference setting (15,000 configurations from 50 trajectories,
p = 1/5) and reports the unsquared Eq. 43 test error on 100 RK4 test
trajectories with latent RK4 dt = 0.01.

Part 2 reproduces the layout of Table 2: test error of L_z, L_x and L_x,p
(p = 3/4, 1/2, 1/4, 1/5) over training sizes given as equivalent full-force
samples (configurations x p), mean +- std over seeds. One autoencoder per
seed, trained on the states of the largest training set, is shared by every
loss, as in the paper.

    python benchmarks/predator_prey_table2.py                 # sizes 600 1500 3000
    python benchmarks/predator_prey_table2.py --sizes 600 --seeds 1 --skip-defaults
"""

import argparse
import time

import numpy as np
import torch
from sklearn.pipeline import Pipeline

from skmacro import ClosureAutoencoder, PartialForceDynamics
from skmacro.experiments import predator_prey
from skmacro.metrics import rollout_error
from skmacro.sampling import sample_partial_forces
from skmacro.systems import PredatorPrey


def default_fit(system, test, seeds):
    """Time ``Pipeline.fit`` with default hyper-parameters and measure its test
    error, once per seed (the seed draws the training trajectories, the
    masks and the networks' initialisation)."""
    print("Part 1: default hyper-parameters, 15,000 configurations, p = 1/5")
    times, errors = [], []
    for seed in range(seeds):
        X = predator_prey.training_states(50, random_state=seed)
        F = sample_partial_forces(system, X, p=0.2, random_state=seed)
        ae = ClosureAutoencoder(observables=system.observables, random_state=seed)
        pipe = Pipeline([("ae", ae), ("dyn", PartialForceDynamics(random_state=seed))])
        start = time.perf_counter()
        pipe.fit(X, F)
        times.append(time.perf_counter() - start)
        errors.append(rollout_error(pipe, *test)[0])
        print(
            f"  seed {seed}: Pipeline.fit {times[-1]:.1f} s, test error "
            f"{errors[-1]:.3e} (autoencoder {len(pipe[0].history_)} epochs, "
            f"dynamics {pipe[1].history_[-1]['epoch']} epochs, "
            f"{pipe[1].history_[-1]['step']} steps)",
            flush=True,
        )
    print(
        f"  Pipeline.fit median {np.median(times):.1f} s; test error (unsquared "
        f"Eq. 43) max {max(errors):.3e}, mean {np.mean(errors):.3e} (paper "
        "1.34e-3)\n",
        flush=True,
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[600, 1500, 3000])
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--test-trajectories", type=int, default=100)
    parser.add_argument("--skip-defaults", action="store_true")
    parser.add_argument(
        "--default-seeds", type=int, default=3, help="repeats of Part 1"
    )
    parser.add_argument("--skip-table", action="store_true")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads\n", flush=True)
    system = PredatorPrey()
    test = predator_prey.test_trajectories(args.test_trajectories, random_state=1)
    if not args.skip_defaults:
        default_fit(system, test, args.default_seeds)
    if not args.skip_table:
        results = predator_prey.table2(
            args.sizes, range(args.seeds), args.test_trajectories
        )
        print(
            "\nPart 2: Table 2 layout, unsquared Eq. 43 error, mean +- std over seeds"
        )
        print(predator_prey.format_table2(results, args.sizes))


if __name__ == "__main__":
    main()
