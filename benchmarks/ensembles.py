"""Ensembles of latent networks on Predator-Prey: the mean trajectory
against single members, and the coverage of the uncertainty band.

For each seed, one closure autoencoder (d = 4) is trained on 50 training
trajectories (15,000 configurations) and shared. Each case trains one
``PartialForceDynamics(n_members=k)`` on the first rows of those states
(3,000 equivalent full-force samples from 15,000 configurations at p = 1/5;
600 from 3,000 at p = 1/5; 600 configurations with all forces, L_x), with
otherwise default settings. Every member is rolled out with its own field
from the encoded initial states of 100 RK4 test trajectories (latent RK4,
dt = 0.01). Printed per case, over seeds: the unsquared Eq. 43 error of the
mean trajectory, of the members (mean, best and worst), the fraction of
true observables (t > 0) inside mean +- 2 std across members, the band's
relative half-width per std, and the fit time.

    python benchmarks/ensembles.py                      # k = 5, seeds 0 1 2
    python benchmarks/ensembles.py --members 3 --seeds 1 --test-trajectories 20
"""

import argparse

import numpy as np
import torch

from skmacro.experiments import predator_prey


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--test-trajectories", type=int, default=100)
    parser.add_argument("--n-std", type=float, default=2.0)
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"{args.members} members\n",
        flush=True,
    )
    results = predator_prey.ensembles(
        n_members=args.members,
        seeds=range(args.seeds),
        n_test=args.test_trajectories,
        n_std=args.n_std,
        log=lambda message: print(message, flush=True),
    )
    print(
        f"\nunsquared Eq. 43 error on (u_mean, v_mean), mean over {args.seeds} "
        f"seeds; coverage of mean +- {args.n_std:g} std across members (t > 0)"
    )
    header = (
        f"{'training set':<32}{'mean traj.':>12}{'members':>12}{'best':>10}"
        f"{'worst':>10}{'coverage':>10}{'std/|z|':>10}{'fit s':>8}"
    )
    print(header)
    for label, runs in results.items():
        mean = np.mean([r.error for r, _ in runs])
        members = np.mean([r.member_errors.mean() for r, _ in runs])
        best = np.mean([r.member_errors.min() for r, _ in runs])
        worst = np.mean([r.member_errors.max() for r, _ in runs])
        coverage = np.mean([r.coverage for r, _ in runs])
        spread = np.mean([r.spread for r, _ in runs])
        seconds = np.mean([s for _, s in runs])
        print(
            f"{label:<32}{mean:>12.3e}{members:>12.3e}{best:>10.2e}{worst:>10.2e}"
            f"{coverage:>10.2f}{spread:>10.2e}{seconds:>8.1f}"
        )


if __name__ == "__main__":
    main()
