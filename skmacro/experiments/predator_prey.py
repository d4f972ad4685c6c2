"""The paper's Predator-Prey protocols (Section 5.1, Appendix B.1): Table 1's
row, Table 2 and the latent structures of Fig. 3 on this system."""

import time

import numpy as np
from sklearn.pipeline import Pipeline

from ..autoencoder import ClosureAutoencoder
from ..dynamics import PartialForceDynamics
from ..sampling import sample_partial_forces
from ..systems import PredatorPrey
from .protocol import (
    DynamicsRun,
    compare_losses,
    ensemble_rollouts,
    equal_budget_rows,
    format_mean_std,
)
from .published import TABLE1, TABLE2

__all__ = [
    "training_states",
    "test_trajectories",
    "equal_budget_comparison",
    "table2",
    "format_table2",
    "latent_structures",
    "ensembles",
]

#: Training sets of :func:`ensembles`: label -> (configurations, p). The
#: configurations are the first rows of a 50-trajectory pool.
ENSEMBLE_CASES = {
    "3000 (15,000 configs, p=1/5)": (15000, 0.2),
    "600 (3,000 configs, p=1/5)": (3000, 0.2),
    "600 (600 configs, L_x)": (600, 1.0),
}

#: States kept per training trajectory (t = 0, 0.1, ..., 29.9).
STATES_PER_TRAJECTORY = 300
#: Table 2's columns: (key, label, p); "z" is L_z, "x" L_x (all forces).
TABLE2_RUNS = (
    ("z", "L_z", 1.0),
    ("x", "L_x", 1.0),
    ("3/4", "L_x,p 3/4", 0.75),
    ("1/2", "L_x,p 1/2", 0.5),
    ("1/4", "L_x,p 1/4", 0.25),
    ("1/5", "L_x,p 1/5", 0.2),
)


def training_states(n_trajectories, random_state=None, system=None):
    """Training states of the paper's protocol (Appendix B.1).

    Explicit Euler with dt = 0.01 from t = 0, every 10th state kept, 300
    states per trajectory (t = 0, 0.1, ..., 29.9, as in the reference code).

    Parameters
    ----------
    n_trajectories : int
    random_state : int, RandomState or None
        Seed of the initial conditions.
    system : PredatorPrey, optional
        Defaults to ``PredatorPrey()``.

    Returns
    -------
    X : ndarray of shape (n_trajectories * 300, 100)
        Trajectory-major: rows ``300 * i ... 300 * i + 299`` are trajectory i.
    """
    system = system or PredatorPrey()
    X0 = system.sample_initial(n_trajectories, random_state=random_state)
    traj = system.simulate(X0, t_end=30.0, dt=0.01, method="euler", stride=10)
    return traj[:, :STATES_PER_TRAJECTORY].reshape(-1, system.n_features)


def test_trajectories(n_trajectories=100, random_state=1, system=None, t_end=30.0):
    """Test trajectories of the paper's protocol: RK4, dt = 0.01, 3000 steps.

    Parameters
    ----------
    n_trajectories : int, default=100
    random_state : int, RandomState or None, default=1
    system : PredatorPrey, optional
    t_end : float, default=30.0
        Horizon (the paper's: 30); shorter ones make quick smoke runs.

    Returns
    -------
    t : ndarray of shape (T,)
        Times 0, 0.01, ..., up to ``t_end`` excluded (T = 3000 for the
        paper's horizon).
    trajectories : ndarray of shape (n_trajectories, T, 100)
    """
    system = system or PredatorPrey()
    steps = int(round(t_end / 0.01))
    X0 = system.sample_initial(n_trajectories, random_state=random_state)
    traj = system.simulate(X0, t_end=steps * 0.01, dt=0.01, method="rk4")[:, :steps]
    return np.arange(steps) * 0.01, traj


def equal_budget_comparison(
    n_trajectories=50,
    p=0.2,
    n_test=100,
    random_state=0,
    ae_params=None,
    dyn_params=None,
    verbose=0,
    log=print,
    *,
    test_t_end=30.0,
):
    """Table 1's Predator-Prey row: one closure autoencoder, then L_x,p on
    partial forces (inclusion probability ``p``) and L_z with all forces on
    as many random configurations as the same force budget pays for.

    Parameters
    ----------
    n_trajectories : int, default=50
        Training trajectories (300 states each): 50 gives the paper's 15,000
        configurations, 3,000 equivalent full-force samples at p = 1/5.
    p : float, default=0.2
    n_test : int, default=100
        Test trajectories (RK4, dt = 0.01, t in [0, 30)).
    random_state : int, default=0
    ae_params, dyn_params : dict, optional
        Extra estimator parameters (e.g. ``{"max_epochs": 2}``).
    verbose : int, default=0
        The estimators' ``verbose``.
    log : callable, default=print
    test_t_end : float, default=30.0
        Horizon of the test trajectories (the paper's: 30).

    Returns
    -------
    dict
        ``results`` (name -> RunResult, names ``"partial"`` and ``"z"``),
        ``encoder``, ``test`` ((t, trajectories)), ``equivalent_size``,
        ``paper`` (Table 1's row) and ``seconds``.
    """
    start = time.perf_counter()
    system = PredatorPrey()
    rng = np.random.default_rng(random_state)
    log(f"[1/5] simulating {n_trajectories} training trajectories (Euler, dt=0.01)")
    X = training_states(n_trajectories, random_state=random_state)
    log(f"      {len(X)} configurations; computing forces on p={p:g} of the cells")
    F_partial = sample_partial_forces(system, X, p=p, random_state=random_state)
    budget = int(np.sum(~np.isnan(F_partial)))
    # L_z gets the same number of force computations as full-force states.
    rows_z = equal_budget_rows(len(X), budget // system.n_features, rng)
    log(f"[2/5] simulating {n_test} test trajectories (RK4, dt=0.01)")
    t, test = test_trajectories(n_test, random_state=random_state + 1, t_end=test_t_end)
    log("[3/5] training the closure autoencoder (d = 4: u_mean, v_mean + 2 closure)")
    encoder = ClosureAutoencoder(
        observables=system.observables,
        n_components=4,
        random_state=random_state,
        verbose=verbose,
        **(ae_params or {}),
    ).fit(X)
    runs = [
        DynamicsRun(
            "partial",
            f"L_x,p (p={p:g})",
            np.arange(len(X)),
            F_partial,
            params={"loss": "partial"},
        ),
        DynamicsRun(
            "z",
            "L_z (all forces)",
            rows_z,
            system.forces(X[rows_z]),
            params={"loss": "z"},
        ),
    ]
    log("[4/5] training L_x,p and L_z; [5/5] rolling out on the test trajectories")
    results = compare_losses(
        encoder,
        X,
        runs,
        t,
        test,
        defaults={
            "random_state": random_state,
            "verbose": verbose,
            **(dyn_params or {}),
        },
        log=log,
    )
    return {
        "results": results,
        "encoder": encoder,
        "test": (t, test),
        "equivalent_size": budget / system.n_features,
        "paper": TABLE1["predator_prey"],
        "seconds": time.perf_counter() - start,
    }


def table2(
    sizes=(600, 1500, 3000),
    seeds=(0, 1, 2),
    n_test=100,
    log=print,
    *,
    ae_params=None,
    dyn_params=None,
    verbose=0,
    test_t_end=30.0,
):
    """Table 2: the test error of L_z, L_x and L_x,p (p = 3/4, 1/2, 1/4, 1/5)
    over training sizes given as equivalent full-force samples
    (configurations x p).

    One autoencoder per seed, trained on the states of the largest training
    set (seed ``100 + seed``), is shared by every loss, as in the paper.

    Parameters
    ----------
    sizes : sequence of int
    seeds : sequence of int
    n_test : int, default=100
    log : callable, default=print
    ae_params, dyn_params : dict, optional
        Extra estimator parameters (e.g. ``{"max_epochs": 2}`` for a smoke
        run, ``{"control_variate": None}`` for the paper's estimator).
    verbose : int, default=0
        The estimators' ``verbose``.
    test_t_end : float, default=30.0
        Horizon of the test trajectories (the paper's: 30).

    Returns
    -------
    dict
        column key -> size -> list of errors (one per seed).
    """
    system = PredatorPrey()
    t, test = test_trajectories(n_test, random_state=1, t_end=test_t_end)
    n_pool = int(np.ceil(max(sizes) / 0.2 / STATES_PER_TRAJECTORY))
    results = {key: {size: [] for size in sizes} for key, _, _ in TABLE2_RUNS}
    for seed in seeds:
        X_pool = training_states(n_pool, random_state=100 + seed)
        encoder = ClosureAutoencoder(
            observables=system.observables,
            random_state=seed,
            verbose=verbose,
            **(ae_params or {}),
        )
        encoder.fit(X_pool)
        for size in sizes:
            runs = []
            for key, label, p in TABLE2_RUNS:
                rows = np.arange(int(round(size / p)))
                X = X_pool[rows]
                full = key in ("z", "x")
                forces = (
                    system.forces(X)
                    if full
                    else sample_partial_forces(system, X, p=p, random_state=seed)
                )
                runs.append(
                    DynamicsRun(
                        key,
                        f"seed {seed} size {size} {label}",
                        rows,
                        forces,
                        params={"loss": "z" if key == "z" else "partial"},
                    )
                )
            done = compare_losses(
                encoder,
                X_pool,
                runs,
                t,
                test,
                defaults={
                    "random_state": seed,
                    "verbose": verbose,
                    **(dyn_params or {}),
                },
                log=log,
            )
            for key, result in done.items():
                results[key][size].append(result.error)
    return results


def format_table2(results, sizes):
    """Table 2's layout, this run's mean +- std over seeds beside the paper's.

    Returns
    -------
    str
    """
    labels = "".join(f"{label:>22}" for _, label, _ in TABLE2_RUNS)
    header = f"{'# training data':>16}{labels}"
    lines = ["this run:", header]
    for size in sizes:
        cells = [format_mean_std(results[key][size]) for key, _, _ in TABLE2_RUNS]
        lines.append(f"{size:>16}" + "".join(f"{c:>22}" for c in cells))
    lines += ["paper (L_z not reported in Table 2):", header]
    for size in sizes:
        row = TABLE2.get(size)
        if row is None:
            continue
        cells = ["-"] + [
            f"{row[key][0]:.2e} +- {row[key][1]:.1e}" for key, _, _ in TABLE2_RUNS[1:]
        ]
        lines.append(f"{size:>16}" + "".join(f"{c:>22}" for c in cells))
    return "\n".join(lines)


def latent_structures(
    n_trajectories=50,
    repeats=5,
    n_test=100,
    p=0.2,
    models=("mlp", "onsager", "gfinn"),
    log=print,
    *,
    ceiling=False,
    ae_params=None,
    dyn_params=None,
):
    """The paper's Fig. 3 protocol on Predator-Prey: L_z against L_x,p for
    each latent model on one force budget, over repeats.

    Each repeat draws new training trajectories (seed ``1000 + repeat``) and
    masks and trains one autoencoder (d = 4) shared by every model. L_x,p
    sees partial forces on every configuration; L_z all forces on a random
    fraction ``p`` of the configurations (the same number of force
    computations).

    Parameters
    ----------
    n_trajectories, repeats, n_test : int
        Training trajectories per repeat, repeats, test trajectories.
    p : float, default=0.2
    models : sequence of str
        Latent models (``PartialForceDynamics(latent_model=...)``).
    log : callable, default=print
    ceiling : bool, default=False
        Also fit each model with L_z on all forces of every configuration
        (loss key ``"z_all"``, ``1/p`` times the budget): the error a latent
        model reaches on this encoder with exact latent velocities
        everywhere, which separates what the model class can represent from
        what the force budget allows.
    ae_params, dyn_params : dict, optional
        Extra ``ClosureAutoencoder`` and ``PartialForceDynamics`` parameters.

    Returns
    -------
    errors : dict
        (model, loss) -> list of errors (inf where a rollout diverged), loss
        in ``"z"``, ``"partial"`` and, with ``ceiling``, ``"z_all"``.
    seconds : dict
        (model, loss) -> list of fit times.
    """
    system = PredatorPrey()
    t, test = test_trajectories(n_test, random_state=1)
    losses = ("z", "partial") + (("z_all",) if ceiling else ())
    errors = {(m, loss): [] for m in models for loss in losses}
    seconds = {key: [] for key in errors}
    for repeat in range(repeats):
        X = training_states(n_trajectories, random_state=1000 + repeat)
        F_partial = sample_partial_forces(system, X, p=p, random_state=repeat)
        rng = np.random.default_rng(repeat)
        rows_z = equal_budget_rows(len(X), int(round(p * len(X))), rng)
        encoder = ClosureAutoencoder(
            observables=system.observables,
            n_components=4,
            random_state=repeat,
            **(ae_params or {}),
        ).fit(X)
        # All forces are computed once: on the budget's rows, or everywhere
        # for the ceiling (whose rows then include the budget's).
        everywhere = np.arange(len(X))
        F_all = system.forces(X) if ceiling else None
        F_z = system.forces(X[rows_z]) if F_all is None else F_all[rows_z]
        # (key, label, rows, forces, loss) of each fit, for every model.
        fits = [
            ("z", "L_z", rows_z, F_z, "z"),
            ("partial", "L_x,p", everywhere, F_partial, "partial"),
        ]
        if ceiling:
            fits.append(("z_all", "L_z, all forces everywhere", everywhere, F_all, "z"))
        runs = [
            DynamicsRun(
                (model, key),
                f"repeat {repeat} {model} {label}",
                rows,
                forces,
                params={"latent_model": model, "loss": loss},
            )
            for model in models
            for key, label, rows, forces, loss in fits
        ]
        done = compare_losses(
            encoder,
            X,
            runs,
            t,
            test,
            defaults={"random_state": repeat, **(dyn_params or {})},
            log=log,
        )
        for key, result in done.items():
            errors[key].append(result.error)
            seconds[key].append(result.fit_seconds)
    return errors, seconds


def ensembles(
    n_members=5,
    cases=None,
    seeds=(0, 1, 2),
    n_test=100,
    n_std=2.0,
    dyn_params=None,
    log=print,
):
    """Ensembles of latent networks on Predator-Prey: the error of the mean
    trajectory against the members' own, and how often the band of
    ``n_std`` standard deviations across members covers the truth.

    For each seed, one autoencoder (d = 4) is trained on a 50-trajectory
    pool (seed ``seed``) and shared; each case trains one ensemble of
    ``n_members`` on the first rows of the pool with partial forces (masks
    seed ``seed``) or, at p = 1, all forces (L_x).

    Parameters
    ----------
    n_members : int, default=5
    cases : dict, optional
        label -> (configurations, p); defaults to :data:`ENSEMBLE_CASES`.
    seeds : sequence of int, default=(0, 1, 2)
    n_test : int, default=100
        Test trajectories (RK4, dt = 0.01, t in [0, 30), seed 1).
    n_std : float, default=2.0
    dyn_params : dict, optional
        Extra ``PartialForceDynamics`` parameters.
    log : callable, default=print

    Returns
    -------
    dict
        label -> list (one per seed) of ``(EnsembleRollouts, fit_seconds)``.
    """
    system = PredatorPrey()
    cases = ENSEMBLE_CASES if cases is None else cases
    t, test = test_trajectories(n_test, random_state=1)
    results = {label: [] for label in cases}
    for seed in seeds:
        X_pool = training_states(50, random_state=seed)
        encoder = ClosureAutoencoder(observables=system.observables, random_state=seed)
        encoder.fit(X_pool)
        for label, (size, p) in cases.items():
            X = X_pool[:size]
            forces = (
                system.forces(X)
                if p == 1
                else sample_partial_forces(system, X, p=p, random_state=seed)
            )
            dyn = PartialForceDynamics(
                n_members=n_members, random_state=seed, **(dyn_params or {})
            )
            start = time.perf_counter()
            dyn.fit(encoder.transform(X), forces)
            seconds = time.perf_counter() - start
            pipe = Pipeline([("ae", encoder), ("dyn", dyn)])
            result = ensemble_rollouts(pipe, t, test, n_std=n_std)
            results[label].append((result, seconds))
            log(
                f"  seed {seed} {label}: mean trajectory {result.error:.3e}, "
                f"members {result.member_errors.mean():.3e} (best "
                f"{result.member_errors.min():.3e}, worst "
                f"{result.member_errors.max():.3e}), coverage "
                f"{result.coverage:.2f}, fit {seconds:.1f} s"
            )
    return results
