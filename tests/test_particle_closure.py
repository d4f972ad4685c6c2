"""Invariances, local Jacobians and size transfer of the particle-set closure."""

import numpy as np
import pytest
import torch

from skmacro.nn import ParticleSetClosure
from skmacro.systems.neighbours import (
    CellList,
    batch_pairs_within,
    minimum_image,
    pairs_within,
)

DENSITY = 0.5
R_CUT = 2.0


def _box(n):
    return (n / DENSITY) ** (1 / 3)


def _states(n_samples, side=4, seed=0, dim=6):
    """Jittered simple-cubic states of side**3 particles at DENSITY (no close
    pairs), positions unwrapped by random whole boxes, random velocities and
    extra scalars for dim > 6."""
    rng = np.random.default_rng(seed)
    n = side**3
    L = _box(n)
    grid = np.stack(np.meshgrid(*[np.arange(side)] * 3, indexing="ij"), -1)
    positions = (grid.reshape(-1, 3) + 0.5) * (L / side)
    positions = positions + rng.uniform(-0.3, 0.3, (n_samples, n, 3))
    positions += L * rng.integers(-2, 3, positions.shape)
    parts = [positions]
    if dim >= 6:
        parts.append(rng.standard_normal((n_samples, n, 3)))
    parts.append(rng.standard_normal((n_samples, n, dim - 3 * len(parts))))
    return torch.as_tensor(np.concatenate(parts, axis=2).reshape(n_samples, -1))


def _closure(n, k=4, dim=6, rows=None, **params):
    """A prepared float64 closure for states of n particles, in eval mode."""
    params = {"r_min": 0.5, **params}
    closure = ParticleSetClosure(R_CUT, dim, density=DENSITY, **params)
    closure = closure.build(n * dim, k).double()
    rows = (
        _states(8, side=round(n ** (1 / 3)), seed=99, dim=dim) if rows is None else rows
    )
    closure.prepare(lambda: iter(torch.split(rows, 3)))
    return closure.eval()


def _dense_jacobian(closure, x, create_graph=False):
    """Autograd's Jacobian (B, k, N) of the closure at the rows of x."""
    x = x.clone().requires_grad_(True)
    z = closure(x)
    rows = [
        torch.autograd.grad(
            z[:, o].sum(), x, retain_graph=True, create_graph=create_graph
        )[0]
        for o in range(z.shape[1])
    ]
    return torch.stack(rows, dim=1)


@pytest.fixture(scope="module")
def closure():
    return _closure(64)


@pytest.fixture(scope="module")
def X():
    return _states(3, seed=1)


# --------------------------------------------------------------- invariances


def _atoms(x, n):
    return x.reshape(len(x), n, -1).clone()


def test_closure_is_invariant_to_permutation_translation_and_rotation(closure, X):
    n = 64
    L = _box(n)
    z, t = closure(X), closure.target(X)
    atoms = _atoms(X, n)
    permuted = atoms[:, torch.randperm(n)].reshape(len(X), -1)
    translated = atoms.clone()
    translated[..., :3] = torch.remainder(
        translated[..., :3] + torch.tensor([1.3, -7.1, 0.4], dtype=X.dtype), L
    )
    rotated = atoms.clone()  # 90 degrees about z: (x, y) -> (y, L - x)
    rotated[..., 0], rotated[..., 1] = atoms[..., 1], L - atoms[..., 0]
    rotated[..., 3], rotated[..., 4] = atoms[..., 4], -atoms[..., 3]
    for other in (
        permuted,
        translated.reshape(len(X), -1),
        rotated.reshape(len(X), -1),
    ):
        torch.testing.assert_close(closure(other), z, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(closure.target(other), t, rtol=1e-9, atol=1e-9)
    # ... and not to a change of the structure.
    squeezed = atoms.clone()
    squeezed[:, :8, :3] *= 0.97
    assert not torch.allclose(closure(squeezed.reshape(len(X), -1)), z, atol=1e-6)


def test_size_agnostic_closure_encodes_a_supercell_like_its_cell(closure, X):
    """A 2x2x2 supercell of a periodic state (8n particles) has the same local
    environments, hence the same closure variables and targets."""
    n, L = 64, _box(64)
    atoms = _atoms(X, n)
    shifts = torch.stack(torch.meshgrid(*[torch.arange(2)] * 3, indexing="ij"), -1)
    copies = atoms[:, None].repeat(1, 8, 1, 1)
    copies[..., :3] += L * shifts.reshape(1, 8, 1, 3).to(X.dtype)
    big = copies.reshape(len(X), -1)
    assert closure.size_agnostic and big.shape[1] == 8 * X.shape[1]
    torch.testing.assert_close(closure(big), closure(X), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(closure.target(big), closure.target(X))


def test_box_closure_rejects_another_size():
    closure = ParticleSetClosure(R_CUT, 6, box=_box(64)).build(6 * 64, 2)
    assert not closure.size_agnostic
    closure.check_n_features(6 * 64)
    with pytest.raises(ValueError, match="fixed box.*built for 64 particles.*density="):
        closure.check_n_features(6 * 512)
    with pytest.raises(ValueError, match="fixed box"):
        closure(torch.zeros(1, 6 * 125))


# --------------------------------------------------------------- Jacobians


@pytest.mark.parametrize("dim, angular", [(6, True), (6, False), (3, True), (7, True)])
def test_local_jacobian_matches_autograd(dim, angular):
    closure = _closure(64, dim=dim, angular=angular)
    X = _states(2, seed=2, dim=dim)
    dense = _dense_jacobian(closure, X)
    J = closure.jacobian(X)
    index = torch.stack([torch.randperm(X.shape[1])[:40] for _ in range(2)])
    torch.testing.assert_close(
        J.columns(index), torch.gather(dense, 2, index[:, None].expand(-1, 4, -1))
    )
    torch.testing.assert_close(J.gram(), dense @ dense.transpose(1, 2))
    v = torch.randn(2, X.shape[1], 3, dtype=X.dtype)
    torch.testing.assert_close(J.matvec(v), dense @ v)
    torch.testing.assert_close(J.matvec(v[..., 0]), (dense @ v[..., :1])[..., 0])
    # Outside gradient recording J's rows are formed once from F^T rho'^T.
    with torch.no_grad():
        J = closure.jacobian(X)
        torch.testing.assert_close(
            J.columns(index), torch.gather(dense, 2, index[:, None].expand(-1, 4, -1))
        )
        torch.testing.assert_close(J.gram(), dense @ dense.transpose(1, 2))
        torch.testing.assert_close(J.matvec(v), dense @ v)
        torch.testing.assert_close(J.matvec(v[..., 0]), (dense @ v[..., :1])[..., 0])


def test_pooled_subset_jacobian_is_exact_and_gram_backpropagates():
    """Pooled over a fixed subset of 30 of 125 atoms: a deterministic
    function of the state whose local Jacobian is still autograd's, and the
    condition-number loss reaches the head's parameters through the Gram
    matrix."""
    closure = _closure(125, pool_atoms=30)
    X = _states(2, side=5, seed=3)
    torch.testing.assert_close(closure(X), closure(X), rtol=0, atol=0)
    dense = _dense_jacobian(closure, X)
    J = closure.jacobian(X)
    index = torch.stack([torch.randperm(X.shape[1])[:40] for _ in range(2)])
    torch.testing.assert_close(
        J.columns(index), torch.gather(dense, 2, index[:, None].expand(-1, 4, -1))
    )
    gram, dense_gram = J.gram(), dense @ dense.transpose(1, 2)
    torch.testing.assert_close(gram, dense_gram)
    # The condition-number loss backpropagates through the Gram matrix.
    params = list(closure.parameters())
    dense = _dense_jacobian(closure, X, create_graph=True)
    dense_gram = dense @ dense.transpose(1, 2)
    loss, dense_loss = gram.sin().sum(), dense_gram.sin().sum()
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    dense_grads = torch.autograd.grad(dense_loss, params, allow_unused=True)
    assert any(g is not None and torch.any(g != 0) for g in grads)
    for got, expected in zip(grads, dense_grads, strict=True):
        if expected is None:
            assert got is None or torch.all(got == 0)
        else:
            torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("pool_atoms", [None, 24])
def test_sampled_gram_is_unbiased(pool_atoms):
    # One atom per state: sampled, among all atoms or pooled ones and others.
    closure = _closure(64, gram_atoms=1, pool_atoms=pool_atoms)
    X = _states(1, seed=4)
    dense = _dense_jacobian(closure, X)
    exact = (dense @ dense.transpose(1, 2))[0]
    # Every row draws its own atoms: 150 independent estimates in one call
    # (the estimate serves where J J^T must stay differentiable in the head).
    estimates = closure.jacobian(X.repeat(150, 1)).gram()
    assert estimates.requires_grad
    estimates = estimates.detach()
    assert not torch.allclose(estimates[0], exact, rtol=0.05)
    error = (estimates.mean(0) - exact).abs()
    standard_error = estimates.std(0) / np.sqrt(len(estimates))
    assert torch.all(error <= 4 * standard_error + 1e-9 * exact.abs().max())


def test_jacobian_to_and_empty_closure(closure, X):
    J = closure.jacobian(X).to(torch.float32)
    assert J.gram().dtype == torch.float32
    empty = _closure(64, k=0)
    J = empty.jacobian(X)
    index = torch.zeros(3, 5, dtype=torch.long)
    assert empty(X).shape == (3, 0)
    assert J.columns(index).shape == (3, 0, 5)
    assert J.gram().shape == (3, 0, 0)
    assert J.matvec(X).shape == (3, 0)
    assert empty.target(X).shape == (3, empty.target_width)


# -------------------------------------------------------- targets and scales


def test_target_is_standardised_and_maps_back_to_descriptor_moments():
    rows = _states(8, seed=5)
    closure = _closure(64, rows=rows)
    t = closure.target(rows)
    assert t.shape == (8, closure.target_width)
    assert len(closure.feature_names) == closure.target_width
    torch.testing.assert_close(t.mean(0), torch.zeros_like(t[0]), atol=1e-5, rtol=0)
    user = closure.target_to_user(t)
    speed2 = _atoms(rows, 64)[..., 3:].square().sum(-1)
    column = closure.feature_names.index("mean speed^2")
    torch.testing.assert_close(user[:, column], speed2.mean(1), rtol=1e-5, atol=1e-5)
    column = closure.feature_names.index("mean square speed^2")
    torch.testing.assert_close(
        user[:, column], speed2.square().mean(1), rtol=1e-4, atol=1e-4
    )


# -------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    "params, error, match",
    [
        ({"density": 0.5, "box": 5.0}, ValueError, "exactly one of density"),
        ({}, ValueError, "exactly one of density"),
        ({"density": -1.0}, ValueError, "density must be a positive"),
        ({"box": 3.0}, ValueError, "must exceed 2\\*r_cut"),
        ({"density": 0.5, "r_min": 2.0}, ValueError, "r_min"),
        ({"density": 0.5, "activation": "tahn"}, ValueError, "did you mean 'tanh'"),
        ({"density": 0.5, "hidden": (64, 0)}, ValueError, "hidden"),
        ({"density": 0.5, "angular": 1}, TypeError, "angular"),
        ({"density": 0.5, "pool_atoms": 0}, ValueError, "pool_atoms"),
    ],
)
def test_bad_parameters_raise(params, error, match):
    with pytest.raises(error, match=match):
        ParticleSetClosure(R_CUT, 6, **params)


def test_bad_inputs_raise(closure):
    with pytest.raises(ValueError, match="particle_dim must be"):
        ParticleSetClosure(R_CUT, 2, density=DENSITY)
    with pytest.raises(ValueError, match="multiple of particle_dim=6"):
        closure.check_n_features(6 * 64 + 1)
    with pytest.raises(ValueError, match="box side .* must exceed 2\\*r_cut"):
        closure.check_n_features(6 * 8)
    with pytest.raises(RuntimeError, match="call build first"):
        ParticleSetClosure(R_CUT, 6, density=DENSITY)(torch.zeros(1, 6 * 64))
    with pytest.raises(ValueError, match="index must have shape"):
        closure.jacobian(_states(2)).columns(torch.zeros(3, 2, dtype=torch.long))


# ------------------------------------------------------------- neighbours


def test_batch_pairs_and_cell_list_match_brute_force():
    rng = np.random.default_rng(0)
    n, L, cutoff = 200, 8.0, 2.3
    positions = rng.uniform(-L, 2 * L, (3, n, 3))  # unwrapped
    i, j = batch_pairs_within(positions, L, cutoff)
    for b in range(3):
        d = minimum_image(positions[b, :, None] - positions[b, None], L)
        close = np.linalg.norm(d, axis=-1) <= cutoff
        expected = {(p, q) for p, q in zip(*np.nonzero(np.triu(close, 1)), strict=True)}
        mine = (i // n == b) & (j // n == b)
        assert {
            (p % n, q % n) for p, q in zip(i[mine], j[mine], strict=True)
        } == expected
        cells = CellList(positions[b], L, cutoff)
        atoms = np.array([3, 17, 17, 150])
        query, neighbour = cells.within(atoms)
        for row, atom in enumerate(atoms):
            found = sorted(neighbour[query == row])
            assert found == sorted(np.nonzero(close[atom] & (np.arange(n) != atom))[0])
    single = pairs_within(positions[0], L, cutoff)
    assert len(single[0]) == np.count_nonzero((i // n) == 0)


def test_jacobian_outputs_are_the_closure_variables(closure, X):
    J = closure.jacobian(X)
    torch.testing.assert_close(J.outputs, closure(X))
    assert not J.detach().outputs.requires_grad


# ------------------------------------------------- through the estimators


@pytest.fixture(scope="module")
def lj_pipeline():
    """A 64-atom Lennard-Jones closure autoencoder and latent dynamics fitted
    in a Pipeline on two short trajectories with partial forces."""
    from sklearn.pipeline import Pipeline

    from skmacro import ClosureAutoencoder, PartialForceDynamics
    from skmacro.sampling import sample_partial_forces
    from skmacro.systems import LennardJones

    system = LennardJones(n_atoms=64, density=0.3)
    X0 = system.sample_initial(2, random_state=0)
    X = system.simulate(X0, t_end=0.05, dt=0.002, stride=2).reshape(-1, 6 * 64)
    F = sample_partial_forces(system, X, p=0.25, random_state=0)
    ae = ClosureAutoencoder(
        observables=system.observables,
        closure=system.particle_closure(n_radial=6),
        n_components=3,
        max_epochs=3,
        random_state=0,
    )
    pipe = Pipeline([("ae", ae), ("dyn", PartialForceDynamics(max_epochs=2))])
    return system, X, pipe.fit(X, F)


def test_particle_closure_runs_through_the_pipeline(lj_pipeline):
    system, X, pipe = lj_pipeline
    ae = pipe["ae"]
    assert ae.size_agnostic_ and ae.n_components_ == 3
    Z = ae.transform(X)
    np.testing.assert_allclose(
        Z[:, 0], system.observables(X).numpy()[:, 0], rtol=1e-5
    )  # the observable stays the first coordinate, exactly
    assert np.all(np.isfinite(pipe.predict(X[:4])))
    # The statistics pass used the local Jacobian: it equals autograd's.
    x = torch.as_tensor(X[:2])
    (_, _, J) = next(ae.iter_jacobians(X[:2]))
    dense = _dense_jacobian(ae.module_.closure.double(), x.double())
    ae.module_.closure.float()
    index = torch.stack([torch.randperm(x.shape[1])[:30] for _ in range(2)])
    torch.testing.assert_close(
        J.columns(index)[:, 1:].double(),
        torch.gather(dense, 2, index[:, None].expand(-1, 2, -1)),
        rtol=1e-3,
        atol=1e-4 * dense.abs().max().item(),
    )
    # The decoder reconstructs the pooled descriptors.
    t = ae.inverse_transform(Z[:4])
    assert t.shape == (4, ae.module_.closure.feature_width)


def test_closure_trained_at_n_atoms_transforms_8n_atoms(lj_pipeline):
    system, X, pipe = lj_pipeline
    ae = pipe["ae"]
    L = system.box_length
    atoms = X[:3].reshape(3, 64, 6)
    shifts = np.stack(np.meshgrid(*[np.arange(2)] * 3, indexing="ij"), -1)
    copies = np.repeat(atoms[:, None], 8, axis=1)
    copies[..., :3] += L * shifts.reshape(1, 8, 1, 3)
    big = copies.reshape(3, -1)
    Z_big, Z = ae.transform(big), ae.transform(X[:3])
    # The closure sees the same environments; the temperature counts 3(n - 1)
    # degrees of freedom at either size.
    np.testing.assert_allclose(Z_big[:, 1:], Z[:, 1:], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(Z_big[:, 0], system.observables(big).numpy()[:, 0])
    assert np.all(np.isfinite(pipe.predict(big)))


def test_condition_loss_on_features_is_the_encoders_gram(lj_pipeline):
    """The Gram matrix the autoencoder penalises while training on features,
    M G M^T from the Gram matrix G of [J_o; ds/dx], is the encoder's J J^T."""
    system, X, pipe = lj_pipeline
    module = pipe["ae"].module_
    closure = module.closure
    x = torch.as_tensor(X[:2])
    P = closure.feature_width
    with torch.no_grad():
        F = closure.feature_jacobian(x)
        rows = F.rmatvec(torch.eye(P).expand(2, P, P)).transpose(1, 2).double()
        s = F.outputs
    xg = x.clone().requires_grad_(True)
    J_o = torch.autograd.grad(system.observables(xg).sum(), xg)[0][:, None].double()
    both = torch.cat([J_o, rows], dim=1)
    G = both @ both.transpose(1, 2)
    got = module.gram_from_features(G, s.double()).detach()
    with torch.no_grad():
        expected = module.jacobian(x).to(torch.float64).gram()
    torch.testing.assert_close(
        got, expected, rtol=1e-4, atol=1e-6 * expected.abs().max()
    )


def test_fit_transform_encodes_the_features_of_the_fit(lj_pipeline, monkeypatch):
    from sklearn.base import clone

    from skmacro.nn import ParticleSetClosure

    _, X, pipe = lj_pipeline
    seen = []
    features = ParticleSetClosure.features

    def counted(self, x):
        seen.append(len(x))
        return features(self, x)

    monkeypatch.setattr(ParticleSetClosure, "features", counted)
    Z = clone(pipe["ae"]).fit_transform(X)
    rows_fit_transform = sum(seen)
    seen.clear()
    ae = clone(pipe["ae"]).fit(X)
    expected = ae.transform(X)
    assert rows_fit_transform == sum(seen) - len(X)  # no second pass over X
    assert Z.encoder is not None and Z.dtype == expected.dtype
    np.testing.assert_allclose(Z, expected, rtol=1e-5, atol=1e-6)
