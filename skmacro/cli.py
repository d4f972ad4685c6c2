"""The main job: ``python -m skmacro predator-prey`` (also ``skmacro``).

Generates the paper's Predator-Prey data, trains one closure autoencoder,
then two latent models on the same force budget (L_x,p with p = 1/5 on
partial forces, L_z on fewer configurations with all forces), and reports
their test errors beside the paper's (Table 1) with a figure like Figs. 6-7.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from .experiments.predator_prey import equal_budget_comparison


def _log(message):
    print(message, flush=True)


def _plot_rollouts(path, pipelines, trajectory, names):
    """True vs predicted (u_mean, v_mean) for one test trajectory, latent RK4
    with dt = 0.1 and 0.5 (paper Figs. 6-7); an ensemble's band of +-2
    standard deviations across members is shaded."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .integrate import simulate
    from .plotting import plot_observables

    t_fine = np.arange(len(trajectory)) * 0.01
    z_true = pipelines["partial"][0].transform(trajectory)[:, :2]
    fig, axes = plt.subplots(2, 2, figsize=(10, 6), sharex=True)
    for row, dt in enumerate((0.1, 0.5)):
        t = np.arange(0.0, 30.0, dt)
        for key, pipe in pipelines.items():
            z_pred, z_std = simulate(
                pipe, trajectory[:1], t, dt=dt, on_divergence="mask", return_std=True
            )
            for col in range(2):
                ax = axes[row, col]
                (line,) = ax.plot(t, z_pred[0, :, col], "--", label=f"{names[key]}")
                if pipe[-1].n_members_ > 1:
                    ax.fill_between(
                        t,
                        z_pred[0, :, col] - 2 * z_std[0, :, col],
                        z_pred[0, :, col] + 2 * z_std[0, :, col],
                        color=line.get_color(),
                        alpha=0.25,
                        lw=0,
                    )
        plot_observables(
            t_fine,
            z_true,
            names=[f"u_mean (dt={dt})", f"v_mean (dt={dt})"],
            axes=axes[row],
        )
    fig.suptitle(
        "Predator-Prey: true vs predicted observables, latent RK4 (cf. Figs. 6-7)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def run_predator_prey(
    n_trajectories=50,
    p=0.2,
    n_test=100,
    output_dir="outputs",
    random_state=0,
    ae_params=None,
    dyn_params=None,
    verbose=1,
):
    """Run the Predator-Prey main job and return its figures.

    Parameters
    ----------
    n_trajectories : int, default=50
        Training trajectories (300 states each): 50 gives the paper's 15,000
        configurations, i.e. 3,000 equivalent full-force samples at p = 1/5.
    p : float, default=0.2
        Inclusion probability of the partial forces for L_x,p.
    n_test : int, default=100
        Test trajectories (RK4, dt = 0.01, t in [0, 30)).
    output_dir : str or Path, default="outputs"
        Where the figure is written.
    random_state : int, default=0
    ae_params, dyn_params : dict, optional
        Extra estimator parameters (e.g. ``{"max_epochs": 2}`` for a smoke run).
    verbose : int, default=1

    Returns
    -------
    dict
        ``errors`` ({"partial": float, "z": float}), ``force_computations``
        (same keys), ``figure`` (Path) and ``seconds``.
    """
    start = time.perf_counter()
    run = equal_budget_comparison(
        n_trajectories=n_trajectories,
        p=p,
        n_test=n_test,
        random_state=random_state,
        ae_params=ae_params,
        dyn_params=dyn_params,
        verbose=verbose,
        log=_log,
    )
    results = run["results"]
    pipelines = {key: result.pipeline for key, result in results.items()}
    names = {key: result.label for key, result in results.items()}
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    figure = out / "predator_prey_rollouts.png"
    _plot_rollouts(figure, pipelines, run["test"][1][0], names)
    seconds = time.perf_counter() - start

    _log("")
    _log(
        f"Test error on (u_mean, v_mean), {n_test} RK4 test trajectories, latent RK4 "
        "dt=0.01, unsquared Eq. 43 (the paper's tables):"
    )
    header = ("loss", "force computations", "this run", "paper (Table 1)")
    _log(f"{header[0]:<18}{header[1]:>20}{header[2]:>12}{header[3]:>22}")
    for loss in ("partial", "z"):
        mean, std = run["paper"][loss]
        result = results[loss]
        _log(
            f"{result.label:<18}{result.force_computations:>20,}{result.error:>12.3e}"
            f"{f'{mean:.2e} +- {std:.1e}':>22}"
        )
    _log(
        f"(equivalent full-force training size {run['equivalent_size']:,.0f}; the "
        "paper's figures are for 3,000)"
    )
    _log(f"figure: {figure}   total time: {seconds:.0f} s")
    return {
        "errors": {key: result.error for key, result in results.items()},
        "force_computations": {
            key: result.force_computations for key, result in results.items()
        },
        "figure": figure,
        "seconds": seconds,
    }


def run_allen_cahn(
    n_grid=64,
    n_train=40,
    n_test=10,
    latent_dim=16,
    p=1 / 25,
    data_dir=None,
    n_encoders=1,
    checkpoint=None,
    random_state=0,
    n_jobs=None,
    ae_params=None,
    dyn_params=None,
    verbose=1,
):
    """Run the Allen-Cahn experiment (Table 1's second row) at a scale.

    Parameters
    ----------
    n_grid : int, default=64
        Grid side (the paper: 200).
    n_train, n_test : int, default=40, 10
        Trajectories (the paper: 400 and 50).
    latent_dim : int, default=16
        d (the reference code: 16; the paper's text: 32).
    p : float, default=1/25
    data_dir : str or None
        Where the trajectories are stored (zarr); None keeps them in memory.
    n_encoders : int, default=1
        Autoencoders whose latent models' members are pooled and chosen by
        their rollouts from training trajectories (1: the paper's protocol).
    checkpoint : str or None
        Folder where every fit is saved as it finishes; a rerun of the same
        settings resumes from it.
    random_state : int, default=0
    n_jobs : int or None
        Trajectories simulated in parallel.
    ae_params, dyn_params : dict, optional
    verbose : int, default=1

    Returns
    -------
    dict
        ``errors`` and ``force_computations`` per loss (the first encoder's
        ensemble), ``pooled_errors`` per loss (with several encoders;
        empty with one), and ``seconds``.
    """
    from .experiments import allen_cahn

    start = time.perf_counter()
    system = allen_cahn.default_system(n_grid)
    t, train, test = allen_cahn.make_data(
        system,
        n_train,
        n_test,
        store=data_dir,
        seed=random_state,
        n_jobs=n_jobs,
        verbose=bool(verbose),
        log=_log,
    )
    run = allen_cahn.free_energy_comparison(
        system,
        t,
        train,
        test,
        latent_dim=latent_dim,
        p=p,
        ae_params=ae_params,
        dyn_params=dyn_params,
        n_encoders=n_encoders,
        checkpoint=checkpoint,
        random_state=random_state,
        verbose=verbose,
        log=_log,
    )
    seconds = time.perf_counter() - start
    _log("")
    _log(
        f"Test error on the free energy, {n_test} test trajectories "
        f"({n_grid} x {n_grid}, d = {latent_dim}), unsquared Eq. 43 over the "
        "snapshots before the torus vanishes:"
    )
    header = ("loss", "force computations", "this run", "paper (Table 1)")
    _log(f"{header[0]:<18}{header[1]:>20}{header[2]:>12}{header[3]:>22}")
    for loss in ("partial", "z"):
        mean, std = run["paper"][loss]
        result = run["results"][loss]
        _log(
            f"{result.label:<18}{result.force_computations:>20,}{result.error:>12.3e}"
            f"{f'{mean:.2e} +- {std:.1e}':>22}"
        )
        pooled = run["pooled"].get(loss)
        if pooled is not None:
            kept = f"{len(pooled.members)} of {len(pooled.candidates)} members"
            _log(f"{'  pooled':<18}{kept:>20}{pooled.error:>12.3e}")
    _log(
        "(the paper: 200 x 200 grid, 400 training trajectories, d = 16"
        + (
            ""
            if n_encoders == 1
            else f"; pooled: members of {n_encoders} encoders' fits chosen by "
            "their rollouts from training trajectories, the rows above being "
            "the first encoder's"
        )
        + f")   total time: {seconds:.0f} s"
    )
    return {
        "errors": {k: r.error for k, r in run["results"].items()},
        "pooled_errors": {k: r.error for k, r in run["pooled"].items()},
        "force_computations": {
            k: r.force_computations for k, r in run["results"].items()
        },
        "seconds": seconds,
    }


class _EpilogAndDefaultsFormatter(
    argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter
):
    """Help that keeps the epilog's line breaks and shows every default."""


def _add_reproduce_parser(sub):
    """``skmacro reproduce TARGET --scale ...``; its help lists what every
    target runs at each scale."""
    from .experiments.reproduce import SCALES, TARGETS

    lines = ["targets (what each scale runs):"]
    for name, target in TARGETS.items():
        lines.append(f"  {name}: {target.title}")
        for scale in SCALES:
            lines.append(f"      {scale}: {target.runs[scale]}")
    rp = sub.add_parser(
        "reproduce",
        help="one table or figure of the paper at a scale (smoke: seconds, small: "
        "minutes, paper: the paper's sizes)",
        description="Run one table or figure of the paper, print it beside the "
        "paper's numbers, and write TARGET.csv and TARGET.png. smoke runs in "
        "seconds (toy sizes, the figures mean nothing); small in under about 15 "
        "minutes on 2 CPU cores; paper at the paper's sizes (hours to days).",
        epilog="\n".join(lines),
        formatter_class=_EpilogAndDefaultsFormatter,
    )
    rp.add_argument("target", choices=list(TARGETS), help="the table or figure")
    rp.add_argument(
        "--scale", choices=SCALES, default="small", help="sizes to run at (see below)"
    )
    rp.add_argument(
        "--output-dir",
        default="outputs/reproduce",
        help="where TARGET.csv and TARGET.png go",
    )
    rp.add_argument(
        "--seed", type=int, default=0, help="seed of the data, forces and fits"
    )
    rp.add_argument(
        "--control-variate",
        choices=["neighbors", "none"],
        default="neighbors",
        help="variance reduction of L_x,p (the library's default); none is the "
        "paper's estimator",
    )
    rp.add_argument(
        "--n-jobs",
        type=int,
        default=None,
        help="parallel simulations and fits (None: one process)",
    )
    rp.add_argument(
        "--cache-dir",
        default=None,
        help="where simulated data are kept between runs (None: "
        "$SKMACRO_DATA_DIR, else outputs/)",
    )


def main(argv=None):
    """Entry point of the ``skmacro`` command."""
    parser = argparse.ArgumentParser(
        prog="skmacro",
        description="Learn macroscopic dynamics from partial microscopic forces.",
    )
    sub = parser.add_subparsers(dest="job", required=True)
    pp = sub.add_parser(
        "predator-prey",
        help="the paper's Predator-Prey experiment: L_x,p vs L_z on one force budget",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    pp.add_argument(
        "--trajectories", type=int, default=50, help="training trajectories"
    )
    pp.add_argument(
        "--p", type=float, default=0.2, help="inclusion probability of L_x,p's forces"
    )
    pp.add_argument(
        "--test-trajectories", type=int, default=100, help="test trajectories scored"
    )
    pp.add_argument(
        "--output-dir", default="outputs", help="where the rollouts' figure goes"
    )
    pp.add_argument(
        "--seed", type=int, default=0, help="seed of the data, forces and fits"
    )
    pp.add_argument(
        "--quick",
        action="store_true",
        help="a smoke run in seconds (few trajectories and epochs)",
    )
    ac = sub.add_parser(
        "allen-cahn",
        help="the paper's Allen-Cahn experiment (free energy, p = 1/25): L_x,p vs "
        "L_z on one force budget; about seven minutes at the default small scale",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ac.add_argument("--grid", type=int, default=64, help="grid side (paper: 200)")
    ac.add_argument("--trajectories", type=int, default=40, help="paper: 400")
    ac.add_argument("--test-trajectories", type=int, default=10, help="paper: 50")
    ac.add_argument(
        "--latent-dim",
        type=int,
        default=16,
        help="d (the reference code's; the paper's text says 32)",
    )
    ac.add_argument(
        "--p",
        type=float,
        default=1 / 25,
        help="inclusion probability of L_x,p's grid forces (paper: 1/25)",
    )
    ac.add_argument(
        "--data-dir", default=None, help="store trajectories there (zarr, resumable)"
    )
    ac.add_argument(
        "--encoders",
        type=int,
        default=1,
        help="autoencoders whose latent models' members are pooled, chosen by "
        "their rollouts from training trajectories (1: the paper's protocol)",
    )
    ac.add_argument(
        "--checkpoint",
        default=None,
        help="save every fit in this folder as it finishes; the same command "
        "resumes from it (a paper-size encoder takes hours)",
    )
    ac.add_argument(
        "--n-jobs",
        type=int,
        default=None,
        help="processes simulating trajectories in parallel (None: one)",
    )
    ac.add_argument(
        "--seed", type=int, default=0, help="seed of the data, forces and fits"
    )
    ac.add_argument("--quick", action="store_true", help="a smoke run in seconds")
    _add_reproduce_parser(sub)
    args = parser.parse_args(argv)
    if args.job == "reproduce":
        from .experiments.reproduce import reproduce

        reproduce(
            args.target,
            args.scale,
            output_dir=args.output_dir,
            random_state=args.seed,
            control_variate=None if args.control_variate == "none" else "neighbors",
            n_jobs=args.n_jobs,
            cache_dir=args.cache_dir,
            log=_log,
        )
        return 0
    quick = {"max_epochs": 2} if args.quick else None
    if args.job == "allen-cahn":
        run_allen_cahn(
            n_grid=32 if args.quick else args.grid,
            n_train=10 if args.quick else args.trajectories,
            n_test=2 if args.quick else args.test_trajectories,
            latent_dim=args.latent_dim,
            p=args.p,
            data_dir=args.data_dir,
            n_encoders=args.encoders,
            checkpoint=args.checkpoint,
            random_state=args.seed,
            n_jobs=args.n_jobs,
            ae_params=quick,
            dyn_params=quick,
            verbose=0 if args.quick else 1,
        )
        return 0
    run_predator_prey(
        n_trajectories=4 if args.quick else args.trajectories,
        p=args.p,
        n_test=3 if args.quick else args.test_trajectories,
        output_dir=args.output_dir,
        random_state=args.seed,
        ae_params=quick,
        dyn_params=quick,
        verbose=0 if args.quick else 1,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
