"""Fit time of this checkout against another revision, measured in one run.

The machines we measure on are shared and noisy, so a speed claim is a ratio
of two codes timed side by side: the base revision is exported with
``git archive`` into a temporary folder, and fresh processes alternate
between the two trees (``--rounds`` each), every one timing the default
``Pipeline.fit`` of the README's main job (Predator-Prey, 15,000
configurations, p = 1/5, 50 trajectories, seed 0) after generating its data.
The median times and their new/old ratio are printed, with the test error of
each tree's last fit.

    python benchmarks/fit_time_ab.py --base HEAD~3
    python benchmarks/fit_time_ab.py --base main --rounds 5 --threads 2
"""

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

# Runs inside each tree; prints one JSON line. Only names that exist in every
# revision since the main job was written are used.
PROBE = """
import json, time
import numpy as np
from sklearn.pipeline import Pipeline
from skmacro import ClosureAutoencoder, PartialForceDynamics
from skmacro.sampling import sample_partial_forces
from skmacro.systems import PredatorPrey

system = PredatorPrey()
X0 = system.sample_initial(50, random_state=0)
X = system.simulate(X0, t_end=30.0, dt=0.01, method="euler", stride=10)
X = X[:, :300].reshape(-1, system.n_features)
F = sample_partial_forces(system, X, p=0.2, random_state=0)
pipe = Pipeline([
    ("ae", ClosureAutoencoder(observables=system.observables, random_state=0)),
    ("dyn", PartialForceDynamics(random_state=0)),
])
start = time.perf_counter()
pipe.fit(X, F)
seconds = time.perf_counter() - start
T0 = system.sample_initial(20, random_state=1)
test = system.simulate(T0, t_end=30.0, dt=0.01, method="rk4")[:, :3000]
from skmacro import simulate
t = np.arange(3000) * 0.01
Z_true = pipe[0].transform(test.reshape(-1, 100)).reshape(20, 3000, -1)[..., :2]
Z_pred = simulate(pipe, test[:, 0], t, on_divergence="mask")[..., :2]
err = np.linalg.norm(Z_true - Z_pred, axis=-1).sum(1) / np.linalg.norm(
    Z_true, axis=-1).sum(1)
print(json.dumps({"seconds": seconds, "error": float(err.mean())}))
"""


def export(revision, folder):
    """The tree of ``revision`` extracted into ``folder``."""
    archive = folder / "base.tar"
    subprocess.run(
        [
            "git",
            "-C",
            str(ROOT),
            "archive",
            "--format=tar",
            "-o",
            str(archive),
            revision,
        ],
        check=True,
    )
    with tarfile.open(archive) as tar:
        tar.extractall(folder / "tree", filter="data")
    return folder / "tree"


def probe(tree, threads):
    env = {**os.environ, "PYTHONPATH": str(tree), "OMP_NUM_THREADS": str(threads)}
    out = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=tree,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="git revision to compare with")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        trees = {"old": export(args.base, Path(tmp)), "new": ROOT}
        runs = {"old": [], "new": []}
        for r in range(args.rounds):
            for name in ("old", "new") if r % 2 == 0 else ("new", "old"):
                runs[name].append(probe(trees[name], args.threads))
                print(
                    f"round {r + 1} {name}: fit {runs[name][-1]['seconds']:.1f} s, "
                    f"error {runs[name][-1]['error']:.3e}",
                    flush=True,
                )
    median = {k: float(np.median([v["seconds"] for v in runs[k]])) for k in runs}
    print(
        f"\nPipeline.fit median over {args.rounds} rounds: old ({args.base}) "
        f"{median['old']:.1f} s, new {median['new']:.1f} s, new/old "
        f"{median['new'] / median['old']:.3f}"
    )
    print(
        f"test error (unsquared Eq. 43, 20 test trajectories): old "
        f"{runs['old'][-1]['error']:.3e}, new {runs['new'][-1]['error']:.3e}"
    )


if __name__ == "__main__":
    main()
