"""The paper's published 800-atom Lennard-Jones models, on the paper's own
data, against the ground truth (Fig. 3, MLP latent model).

What it measures
----------------
The reference code (github MLDS-NUS/Learn-Partial) ships the models behind
Fig. 3: one autoencoder and ten MLP latent models each for ``L_x,p``
(p = 1/16) and ``L_z``. This script

1. regenerates the paper's 100 trajectories with the paper's LAMMPS protocol
   (atoms placed at random with seed 34141 in [-5, 5]^3, Gaussian velocities
   with seed 87878 scaled to T0, a loose energy minimisation, lj/cut 2.5
   unshifted, NVE, dt = 0.001, 250 states each; atoms in the order LAMMPS
   writes an unsorted dump, positions unwrapped). The initial temperatures
   come from bash's ``$RANDOM`` after ``RANDOM=1`` (bash >= 5.1), truncated
   to four decimals as ``bc`` does; runs 1-90 train, 91-100 test. The
   published autoencoder's reconstruction error on the test states checks
   that these are the states it was trained on;
2. loads the published autoencoder into a :class:`skmacro.ClosureAutoencoder`
   (same architecture; the observable is T, the reference's 20 T, which
   changes neither ``L_x,p`` nor a relative error on T) and rolls out the
   published latent models with the reference's normalisation (mean and
   standard deviation of z and of the exact dz/dt over the training states),
   RK4 at dt = 0.001 over the 250 test states;
3. trains skmacro's :class:`~skmacro.PartialForceDynamics` on the published
   encoder with the paper's protocol: one draw of 50 atoms per training
   configuration (``sample_partial_forces``, this library's forces), ten
   latent networks that differ in their seed only, and ``L_z`` on whole
   trajectories with the same number of force evaluations;
4. with ``--library-encoder``, the same with skmacro's own encoder
   (``skmacro.experiments.lennard_jones.fit_autoencoder``) on the same data.

The error is Eq. 43 with unsquared norms on T, as the paper's figures, mean
+- std over the ten latent networks.

Run (about 30 minutes on 2 CPU cores; needs LAMMPS, ``pip install
"skmacro[md]"``, and a clone of the reference code)::

    git clone https://github.com/MLDS-NUS/Learn-Partial
    python benchmarks/lj_published_models.py --reference Learn-Partial \\
        --threads 2

The simulated trajectories are cached (float32) in ``$SKMACRO_DATA_DIR``
(default ``outputs/``).
"""

import argparse
import os
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from skmacro import ClosureAutoencoder
from skmacro.experiments import lennard_jones as lj
from skmacro.experiments.protocol import (
    DynamicsRun,
    compare_losses,
    equal_budget_rows,
    format_mean_std,
)
from skmacro.experiments.published import FIG3
from skmacro.integrate import integrate
from skmacro.metrics import mean_relative_error
from skmacro.systems import LennardJones, lammps_engine

N_ATOMS, N_STATES, N_TRAIN, N_TEST = 800, 250, 90, 10
CHECKPOINTS = "Lennard_Jones/checkpoints"
AUTOENCODER = f"{CHECKPOINTS}/AE_dim_32_atoms_800_2024_05_18_08:23:56/AE.pth"
LATENT_MODELS = {
    "partial": f"{CHECKPOINTS}/G_lx_atoms_800_MLP_2024_05_19_11:03:41",
    "z": f"{CHECKPOINTS}/G_lz_atoms_800_MLP_2024_05_19_11:03:50",
}
LABEL = {"partial": "L_x,p", "z": "L_z"}


# --------------------------------------------------------------------- data
def bash_random(seed, n):
    """The first ``n`` values of bash's ``$RANDOM`` after ``RANDOM=seed``
    (bash >= 5.1: the Park-Miller generator, its two 16-bit halves xor-ed,
    never the same value twice in a row)."""
    state, last, values = seed, 0, []
    while len(values) < n:
        state = 16807 * state % 0x7FFFFFFF
        value = ((state >> 16) ^ (state & 0xFFFF)) & 0x7FFF
        if value != last:
            values.append(value)
            last = value
    return values


def initial_temperatures():
    """T0 of the reference's 100 runs: ``0.5 + R / 32767`` with ``bc``'s
    truncation to four decimals."""
    return [
        0.5 + int(value * 10_000 // 32767) / 10_000 for value in bash_random(1, 100)
    ]


def simulate_run(temperature, dump):
    """One run of the paper's LAMMPS protocol: positions (unwrapped),
    velocities and interatomic forces, each (N_STATES, n_atoms, 3), in
    LAMMPS's dump order."""
    lmp = lammps_engine.import_lammps().lammps(
        cmdargs=["-log", "none", "-screen", "none", "-nocite"]
    )
    try:
        lmp.commands_string(
            f"""
            units lj
            dimension 3
            atom_style atomic
            boundary p p p
            region box block -5 5 -5 5 -5 5
            create_box 1 box
            create_atoms 1 random {N_ATOMS} 34141 box
            mass 1 1.0
            velocity all create {temperature:.4f} 87878 dist gaussian
            pair_style lj/cut 2.5
            pair_coeff 1 1 1.0 1.0 2.5
            neighbor 0.3 bin
            minimize 1.0e-1 1.0e-4 1000 10000
            reset_timestep 0
            fix nve all nve
            timestep 0.001
            dump states all custom 1 {dump} id x y z ix iy iz vx vy vz fx fy fz
            dump_modify states format float %.10g
            run {N_STATES}
            """
        )
    finally:
        lmp.close()
    # Each frame: a 9-line header, then one line per atom.
    lines = np.array(Path(dump).read_text().splitlines()[: (9 + N_ATOMS) * N_STATES])
    atoms = lines.reshape(N_STATES, 9 + N_ATOMS)[:, 9:]
    frames = np.array(" ".join(atoms.ravel()).split(), dtype=np.float64)
    frames = frames.reshape(N_STATES, N_ATOMS, 13)
    if not (frames[..., 0] == frames[0, :, 0]).all():
        raise RuntimeError("LAMMPS reordered the atoms during the run")
    positions = frames[..., 1:4] + (frames[..., 4:7] - frames[0, :, 4:7]) * 10.0
    return positions, frames[..., 7:10], frames[..., 10:13]


def load_or_simulate_paper_data(cache_dir):
    """States (100, N_STATES, 6 n) in skmacro's layout (each atom's position
    then velocity) and their time derivatives ``(v, F / m)`` from LAMMPS's
    forces (m = 1), cached as float32."""
    path = Path(cache_dir) / "lj_published_800at_100traj_250states.npz"
    if path.exists():
        with np.load(path) as data:
            print(f"data: loaded {path}", flush=True)
            return data["states"], data["forces"]
    start = time.perf_counter()
    states, forces = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for T0 in initial_temperatures():
            r, v, a = simulate_run(T0, os.path.join(tmp, "run.dump"))
            states.append(np.concatenate([r, v], axis=-1).reshape(N_STATES, -1))
            forces.append(np.concatenate([v, a], axis=-1).reshape(N_STATES, -1))
    states, forces = np.float32(states), np.float32(forces)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, states=states, forces=forces)
    print(
        f"data: simulated 100 runs with LAMMPS in "
        f"{time.perf_counter() - start:.0f} s, cached in {path}",
        flush=True,
    )
    return states, forces


# ----------------------------------------------------------- published models
def reference_columns():
    """Column of the reference's layout (all positions, then all velocities)
    for each column of skmacro's layout (per atom: position, velocity)."""
    atom = np.arange(N_ATOMS)[:, None]
    part = np.arange(6)[None, :]
    return np.where(
        part < 3, 3 * atom + part, 3 * N_ATOMS + 3 * atom + part - 3
    ).ravel()


def published_autoencoder(path, system, X):
    """The published autoencoder as a fitted ClosureAutoencoder.

    The closure's layers are the published encoder's (first-layer columns
    reordered to skmacro's layout, raw inputs: ``x_mean = 0``,
    ``x_scale = 1``); the decoder is the published one rewritten for
    skmacro's decoder input, the standardised z (the published decoder reads
    the raw closure only, so T's column is zero)."""
    weights = torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
    ae = ClosureAutoencoder(
        observables=system.observables, n_components=32, max_epochs=1, random_state=0
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one epoch on 64 states: weights replaced
        ae.fit(X[:64])
    columns = torch.as_tensor(reference_columns())
    module = ae.module_
    closure = module.closure
    with torch.no_grad():
        closure.x_mean.zero_()
        closure.x_scale.fill_(1.0)
        for i in (0, 2, 4):
            closure.net[i].weight.copy_(weights[f"encoder_net.{i}.weight"])
            closure.net[i].bias.copy_(weights[f"encoder_net.{i}.bias"])
        closure.net[0].weight.copy_(closure.net[0].weight[:, columns])
        z = torch.as_tensor(np.asarray(ae.transform(X)))
        module.z_mean.copy_(z.mean(dim=0))
        module.z_scale.copy_(z.std(dim=0))
        ae.latent_mean_, ae.latent_scale_ = (
            module.z_mean.numpy().copy(),
            module.z_scale.numpy().copy(),
        )
        first = weights["decoder_net.0.weight"]
        module.decoder[0].weight.zero_()
        module.decoder[0].weight[:, 1:] = first * module.z_scale[1:]
        module.decoder[0].bias.copy_(
            weights["decoder_net.0.bias"] + first @ module.z_mean[1:]
        )
        module.decoder[2].weight.copy_(weights["decoder_net.2.weight"])
        module.decoder[2].bias.copy_(weights["decoder_net.2.bias"])
        module.decoder[4].weight.copy_(weights["decoder_net.4.weight"][columns])
        module.decoder[4].bias.copy_(weights["decoder_net.4.bias"][columns])
    return ae


def latent_mlp(path):
    """A published latent model: an MLP 32 -> 256 -> 256 -> 32 (ReLU) on
    standardised z, its output a standardised dz/dt."""
    net = nn.Sequential(
        nn.Linear(32, 256),
        nn.ReLU(),
        nn.Linear(256, 256),
        nn.ReLU(),
        nn.Linear(256, 32),
    )
    weights = torch.load(path, map_location="cpu", weights_only=False)["net"]
    net.load_state_dict({key.removeprefix("MLP."): w for key, w in weights.items()})
    return net.eval()


def exact_latent(ae, X, forces):
    """z and the exact dz/dt = J f over the rows of X (chunked)."""
    z, dz = [], []
    for start in range(0, len(X), 1024):
        rows = slice(start, start + 1024)
        z_rows, dz_rows = torch.func.jvp(
            ae.module_.encode,
            (torch.as_tensor(X[rows]),),
            (torch.as_tensor(forces[rows]),),
        )
        z.append(z_rows.detach())
        dz.append(dz_rows.detach())
    return torch.cat(z), torch.cat(dz)


def published_errors(reference, ae, train, train_forces, test, dt):
    """Error on T of the ten published latent models per loss."""
    N = train.shape[-1]
    z, dz = exact_latent(ae, train.reshape(-1, N), train_forces.reshape(-1, N))
    z_mean, z_std, dz_mean, dz_std = z.mean(0), z.std(0), dz.mean(0), dz.std(0)
    z_true = ae.module_.encode(torch.as_tensor(test.reshape(-1, N))).detach()
    z_true = z_true.reshape(len(test), -1, z.shape[1])
    errors = {}
    for loss, folder in LATENT_MODELS.items():
        errors[loss] = []
        for fold in range(10):
            net = latent_mlp(Path(reference) / folder / f"fold_{fold}_final.pth")
            with torch.no_grad():
                path = integrate(
                    lambda z, net=net: net((z - z_mean) / z_std) * dz_std + dz_mean,
                    z_true[:, 0],
                    dt,
                    test.shape[1] - 1,
                )
            z_pred = torch.stack(path, dim=1)
            errors[loss].append(
                mean_relative_error(z_true[..., :1], z_pred[..., :1], squared=False)
            )
    return errors


# ------------------------------------------------------------- skmacro models
def library_errors(ae, system, train, test, args):
    """Error on T of ten skmacro latent models per loss on encoder ``ae``:
    L_x,p from one draw of ``args.atoms_per_config`` atoms per
    configuration, L_z from whole trajectories of the same force cost."""
    n_traj, n_states, N = train.shape
    X = train.reshape(-1, N)
    k = args.atoms_per_config
    F = lj.partial_forces(system, X, k, args.seed)
    rows = equal_budget_rows(
        len(X),
        round(len(X) * k / N_ATOMS),
        np.random.default_rng(args.seed),
        trajectory_length=n_states,
    )
    F_all = system.forces(X[rows])
    t = np.arange(test.shape[1]) * args.dt
    errors = {"partial": [], "z": []}
    for repeat in range(args.repeats):
        seed = args.seed + 1000 * (repeat + 1)
        runs = [
            DynamicsRun(
                "partial",
                f"L_x,p seed {seed}",
                np.arange(len(X)),
                F,
                params={"control_variate": args.control_variate},
            ),
            DynamicsRun(
                "z",
                f"L_z seed {seed}",
                rows,
                F_all,
                params={"loss": "z", "control_variate": None},
            ),
        ]
        done = compare_losses(
            ae,
            X,
            runs,
            t,
            test,
            dt=args.dt,
            defaults={
                "latent_model": "mlp",
                "max_epochs": args.dyn_epochs,
                "random_state": seed,
            },
            log=print,
        )
        for loss, result in done.items():
            errors[loss].append(result.error)
    return errors


def main():
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--reference", required=True, help="clone of Learn-Partial")
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--atoms-per-config", type=int, default=50)
    parser.add_argument("--dyn-epochs", type=int, default=200)
    parser.add_argument("--ae-epochs", type=int, default=30)
    parser.add_argument("--lambda-cond", type=float, default=1e-6)
    parser.add_argument(
        "--control-variate", choices=["none", "neighbors"], default="none"
    )
    parser.add_argument("--library-encoder", action="store_true")
    parser.add_argument(
        "--ae-adam", choices=["reference", "torch"], default="reference"
    )
    parser.add_argument("--dt", type=float, default=0.001)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cache-dir", default=None, help="default $SKMACRO_DATA_DIR")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    args.control_variate = None if args.control_variate == "none" else "neighbors"
    if not (Path(args.reference) / AUTOENCODER).exists():
        raise SystemExit(
            f"{args.reference} holds no {AUTOENCODER}: clone "
            "https://github.com/MLDS-NUS/Learn-Partial there"
        )
    commit = subprocess.run(
        ["git", "-C", args.reference, "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    print(f"reference code: {args.reference} at {commit or 'unknown commit'}")

    states, lammps_forces = load_or_simulate_paper_data(lj.data_dir(args.cache_dir))
    train, test = states[:N_TRAIN], states[N_TRAIN:]
    system = LennardJones(n_atoms=N_ATOMS, density=0.8)
    N = states.shape[-1]
    rows = np.arange(0, len(states) * N_STATES, 997)
    mine = system.forces(states.reshape(-1, N)[rows])
    theirs = lammps_forces.reshape(-1, N)[rows]
    print(
        f"forces: skmacro against the LAMMPS dump, max |difference| "
        f"{np.abs(mine - theirs).max():.1e} (max |f| {np.abs(theirs).max():.1f})"
    )

    start = time.perf_counter()
    ae = published_autoencoder(
        Path(args.reference) / AUTOENCODER, system, train.reshape(-1, N)
    )
    X_test = test[:, ::25].reshape(-1, N)
    error = np.mean((ae.inverse_transform(ae.transform(X_test)) - X_test) ** 2)
    print(
        f"published autoencoder: test reconstruction MSE {error:.2e} (variance "
        f"of the test states {X_test.var(axis=0).mean():.2e})"
    )
    table = {
        "published models": published_errors(
            args.reference, ae, train, lammps_forces[:N_TRAIN], test, args.dt
        )
    }
    print(f"published models evaluated in {time.perf_counter() - start:.0f} s")

    print("skmacro dynamics on the published encoder:", flush=True)
    table["skmacro dynamics, published encoder"] = library_errors(
        ae, system, train, test, args
    )
    if args.library_encoder:
        print("skmacro encoder and dynamics:", flush=True)
        ae_lib = lj.fit_autoencoder(
            system,
            train.reshape(-1, N),
            epochs=args.ae_epochs,
            lambda_cond=args.lambda_cond,
            adam=args.ae_adam,
            random_state=args.seed + 1,
        )
        table[f"skmacro encoder ({args.ae_adam} Adam)"] = library_errors(
            ae_lib, system, train, test, args
        )

    print()
    print(
        f"Error on T (unsquared Eq. 43, {N_TEST} test trajectories, mean +- std "
        "over latent networks; one encoder and one draw of atoms per row)"
    )
    header = f"{'models':>38} {'L_x,p':>22} {'L_z':>22}"
    print(header)
    print("-" * len(header))
    for name, errors in table.items():
        cells = [format_mean_std(errors[loss]) for loss in ("partial", "z")]
        print(f"{name:>38} {cells[0]:>22} {cells[1]:>22}")
    paper = [
        f"{m:.3e} +- {s:.2e}" for m, s in (FIG3["mlp"][k] for k in ("partial", "z"))
    ]
    print(f"{'paper Fig. 3':>38} {paper[0]:>22} {paper[1]:>22}")


if __name__ == "__main__":
    main()
