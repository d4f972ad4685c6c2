"""Table 1's Allen-Cahn row (paper Section 5.3, Appendix B.2): the free
energy of a 2-D phase field learned from forces on 1/25 of its grid values
(L_x,p) against all forces on the snapshots the same budget pays for (L_z).

The protocol is :mod:`skmacro.experiments.allen_cahn`; this script runs it
at a chosen scale and prints the errors beside Table 1 with the wall time
and peak anonymous memory of each phase
(:class:`skmacro.experiments.resources.PhaseMeter`).

A run in minutes (64 x 64 grid, 40 + 10 trajectories, trajectories in
memory)::

    python benchmarks/allen_cahn.py

A larger one, trajectories in zarr stores deleted at the end::

    python benchmarks/allen_cahn.py --grid 100 --trajectories 100 \\
        --data-dir /tmp/allen-cahn

The paper's size is ``--grid 200 --trajectories 400 --test-trajectories 50``
(25.6 GB of float32 trajectories: give ``--data-dir``); the protocol's
budgets (``AE_PARAMS``, ``DYNAMICS_PARAMS``) then train the autoencoder for
5 epochs over its ~100,000 active snapshots and each latent model for 340
epochs, about an hour and a half on one CPU thread::

    python benchmarks/allen_cahn.py --grid 200 --trajectories 400 \\
        --test-trajectories 50 --data-dir /tmp/allen-cahn --verbose 1

``--ae-stride k`` instead fits the autoencoder on every k-th snapshot,
which skips the states between. ``--encoders k`` repeats the fits on k
autoencoders and pools each loss's members, chosen by their rollouts from
50 training trajectories (k times the cost; the first encoder's ensemble
is printed too)::

    python benchmarks/allen_cahn.py --grid 200 --trajectories 400 \\
        --test-trajectories 50 --data-dir /tmp/allen-cahn --encoders 3

A killed run keeps the trajectories already written to ``--data-dir``
(pass ``--keep-data`` to keep them at the end too) and resumes their
simulation on the next call. ``--checkpoint DIR`` also saves every fit
(each autoencoder, each latent model on it) as it finishes: the same
command resumes from the last one, and a run with more ``--encoders``
reuses those of a run with fewer (the folder is kept; a run with other
settings refuses it)::

    python benchmarks/allen_cahn.py --grid 200 --trajectories 400 \\
        --test-trajectories 50 --data-dir /tmp/allen-cahn --keep-data \\
        --encoders 5 --checkpoint /tmp/allen-cahn-fits
"""

import argparse
import shutil
import time
from pathlib import Path

from skmacro.experiments import allen_cahn as ac
from skmacro.experiments.protocol import format_mean_std
from skmacro.experiments.resources import PhaseMeter


def given(**options):
    """The options that were set (not None), for the estimators' overrides."""
    return {key: value for key, value in options.items() if value is not None}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--grid", type=int, default=64, help="grid side (paper: 200)")
    parser.add_argument("--trajectories", type=int, default=40, help="paper: 400")
    parser.add_argument("--test-trajectories", type=int, default=10, help="paper: 50")
    parser.add_argument("--latent-dim", type=int, default=16, help="d (paper: 16)")
    parser.add_argument("--p", type=float, default=1 / 25)
    parser.add_argument("--latent-model", default="onsager")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--ae-stride",
        type=int,
        default=1,
        help="fit the autoencoder on every k-th active snapshot (the dynamics "
        "see them all)",
    )
    parser.add_argument(
        "--ae-epochs",
        type=int,
        default=None,
        help="the autoencoder's min_epochs: it trains for the fewest whole epochs "
        "that are at least this many and give its min_steps (default: the "
        f"protocol's, {ac.AE_PARAMS['min_epochs']})",
    )
    parser.add_argument(
        "--base-fan-in",
        type=int,
        default=None,
        help="the autoencoder's base_fan_in (default: the estimator's, 8192); "
        "a smaller value slows its first layer on wide grids",
    )
    parser.add_argument(
        "--latent-noise",
        type=float,
        default=None,
        help="the latent models' latent_noise (default: the protocol's, "
        f"{ac.DYNAMICS_PARAMS['latent_noise']})",
    )
    parser.add_argument(
        "--dyn-steps",
        type=int,
        default=None,
        help="the latent models' min_steps (default: the protocol's, "
        f"{ac.DYNAMICS_PARAMS['min_steps']})",
    )
    parser.add_argument(
        "--dyn-epochs",
        type=int,
        default=None,
        help="the latent models' min_epochs (default: the protocol's, "
        f"{ac.DYNAMICS_PARAMS['min_epochs']})",
    )
    parser.add_argument(
        "--encoders",
        type=int,
        default=1,
        help="autoencoders (seeds --seed, --seed + 1, ...) whose latent models' "
        "members are pooled, chosen by their rollouts from training trajectories",
    )
    parser.add_argument(
        "--selection-trajectories",
        type=int,
        default=50,
        help="training trajectories the pooled members are chosen on",
    )
    parser.add_argument(
        "--checkpoint",
        default=None,
        help="save every fit in this folder as it finishes, and load the fits "
        "already there (a killed run resumes)",
    )
    parser.add_argument("--n-jobs", type=int, default=None)
    parser.add_argument(
        "--verbose",
        type=int,
        default=0,
        help="1: progress bars of the simulation, the partial forces and each "
        "fit (a paper-size run is over an hour)",
    )
    parser.add_argument(
        "--data-dir",
        default=None,
        help="write the trajectories to zarr stores there (None: in memory)",
    )
    parser.add_argument(
        "--keep-data", action="store_true", help="keep --data-dir at the end"
    )
    args = parser.parse_args(argv)

    start = time.perf_counter()
    meter = PhaseMeter()
    system = ac.default_system(args.grid)
    with meter("data generation (Strang)"):
        t, train, test = ac.make_data(
            system,
            args.trajectories,
            args.test_trajectories,
            store=args.data_dir,
            seed=args.seed,
            n_jobs=args.n_jobs,
            verbose=bool(args.verbose),
        )
    ae_params = given(min_epochs=args.ae_epochs, base_fan_in=args.base_fan_in)
    dyn_params = given(
        latent_noise=args.latent_noise,
        min_steps=args.dyn_steps,
        min_epochs=args.dyn_epochs,
    )
    run = ac.free_energy_comparison(
        system,
        t,
        train,
        test,
        latent_dim=args.latent_dim,
        p=args.p,
        latent_model=args.latent_model,
        autoencoder_stride=args.ae_stride,
        n_encoders=args.encoders,
        selection_trajectories=args.selection_trajectories,
        checkpoint=args.checkpoint,
        ae_params=ae_params,
        dyn_params=dyn_params,
        random_state=args.seed,
        verbose=args.verbose,
        meter=meter,
    )
    seconds = time.perf_counter() - start

    print(
        f"\nAllen-Cahn, {args.grid} x {args.grid} grid, {args.trajectories} training "
        f"({run['n_configurations']} active snapshots) and {args.test_trajectories} "
        f"test trajectories, d = {args.latent_dim}, latent model "
        f"{args.latent_model}"
        + ("" if args.ae_stride == 1 else f", autoencoder on 1 in {args.ae_stride}")
        + "".join(f", autoencoder {k}={v}" for k, v in ae_params.items())
        + "".join(f", latent models {k}={v}" for k, v in dyn_params.items())
        + "; unsquared Eq. 43 error on the free energy over the test snapshots "
        "before the torus vanishes:"
    )
    print(
        f"{'loss':<18}{'configs':>9}{'force computations':>20}{'ensemble':>11}"
        f"{'its members':>22}{'paper (Table 1)':>22}"
    )
    for name in ("partial", "z"):
        result = run["results"][name]
        mean, std = run["paper"][name]
        print(
            f"{result.label:<18}{result.n_configurations:>9}"
            f"{result.force_computations:>20,}{result.error:>11.3e}"
            f"{format_mean_std(result.member_errors):>22}"
            f"{f'{mean:.2e} +- {std:.1e}':>22}"
        )
        pooled = run["pooled"].get(name)
        if pooled is not None:
            print(
                f"{'  pooled':<18}{'':>9}{'':>20}{pooled.error:>11.3e}"
                f"{format_mean_std(pooled.member_errors):>22}"
                f"{f'{len(pooled.members)} of {len(pooled.candidates)} members':>22}"
            )
    print(
        "(the ensemble's mean rollout, and its members' own rollouts: mean +- "
        "standard deviation; the paper: 200 x 200 grid, 400 training and 50 "
        "test trajectories, mean +- standard deviation over three latent-model "
        "seeds on one encoder)"
        + (
            ""
            if args.encoders == 1
            else f"; 'pooled': the members of all {args.encoders} encoders' fits "
            "chosen by their rollouts from training trajectories, the ensemble "
            "above being the first encoder's"
        )
    )
    print(
        "autoencoder: median condition number of J J^T "
        f"{run['encoder'].condition_number_:.3g} (L_x,p weighs latent errors by "
        "its inverse; the fit warns when it is large)"
    )
    print()
    print(meter.table())
    print(f"total: {seconds:.0f} s")
    if args.data_dir is not None and not args.keep_data:
        del train, test
        shutil.rmtree(Path(args.data_dir), ignore_errors=True)


if __name__ == "__main__":
    main()
