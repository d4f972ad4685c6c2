"""Latent vector fields: shapes, autograd contexts and the physics built in.

The structural laws (Onsager dissipation, GENERIC conservation and entropy
production) must hold for *any* weights, so they are checked on untrained,
randomly initialised networks.
"""

import pickle
from functools import partial

import pytest
import torch

from skmacro.integrate import integrate
from skmacro.nn.vector_fields import (
    GFINN,
    LATENT_MODELS,
    MLPVectorField,
    OnsagerNet,
    resolve_latent_model,
)

D = 4
#: OnsagerNet with its sub-networks on one residual trunk, in the reference
#: code's Allen-Cahn settings.
SharedOnsagerNet = partial(
    OnsagerNet, shared=True, activation="requr", alpha=0.1, forcing=True
)
ALL = [MLPVectorField, OnsagerNet, SharedOnsagerNet, GFINN]
ONSAGER_LAYOUTS = pytest.mark.parametrize(
    "layout", [{}, {"shared": True, "activation": "requr"}], ids=["separate", "shared"]
)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _make(cls, dtype=torch.float64, **kwargs):
    return cls(D, **kwargs).to(dtype)


def _z(n=32, dtype=torch.float64):
    return torch.randn(n, D, dtype=dtype)


def _rollout(model, z0, dt, n_steps):
    with torch.no_grad():
        return torch.stack(integrate(model, z0, dt, n_steps, method="rk4"))


# --------------------------------------------------------------------------
# Contract shared by all models


@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_shape_and_dtype(cls, dtype):
    model = _make(cls, dtype)
    out = model(_z(7, dtype))
    assert out.shape == (7, D)
    assert out.dtype == dtype
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("cls", ALL)
def test_batch_rows_are_independent(cls):
    # Gradients come from one backward pass of the batch sum, which is only
    # right when no sample influences another.
    model = _make(cls)
    z = _z(5)
    batched = model(z)
    single = torch.cat([model(z[i : i + 1]) for i in range(5)])
    torch.testing.assert_close(batched, single)


@pytest.mark.parametrize("cls", ALL)
@pytest.mark.parametrize("requires_grad", [False, True])
def test_no_grad_rollout_context_leaves_input_alone(cls, requires_grad):
    model = _make(cls)
    z = _z().requires_grad_(requires_grad)
    before = z.detach().clone()
    with torch.no_grad():
        out = model(z)
    assert not out.requires_grad
    assert z.requires_grad == requires_grad
    assert z.grad is None
    torch.testing.assert_close(z.detach(), before, rtol=0, atol=0)
    torch.testing.assert_close(out, model(z).detach())


@pytest.mark.parametrize("cls", ALL)
def test_inference_mode(cls):
    model = _make(cls)
    z = _z()
    with torch.inference_mode():
        out = model(z)
    torch.testing.assert_close(out, model(z).detach())


@pytest.mark.parametrize("cls", ALL)
def test_gradients_reach_every_parameter(cls):
    model = _make(cls)
    z = _z()
    loss = model(z).square().sum()
    loss.backward()
    assert z.grad is None and not z.requires_grad
    # A constant added to E or S leaves the GENERIC flow unchanged, so the
    # last biases of those networks are the only parameters without effect.
    idle = {"energy_net.4.bias", "entropy_net.4.bias"} if cls is GFINN else set()
    for name, p in model.named_parameters():
        if name in idle:
            continue
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("cls", ALL)
def test_jacobian_in_z(cls):
    # Differentiating the field itself in z (e.g. for a stability analysis)
    # goes through a second derivative of the potentials.
    model = _make(cls)
    z0 = _z(1)[0]
    jac = torch.autograd.functional.jacobian(
        lambda v: model(v.unsqueeze(0))[0], z0, create_graph=False
    )
    eps = 1e-6
    for j in range(D):
        step = torch.zeros(D, dtype=z0.dtype)
        step[j] = eps
        with torch.no_grad():
            fd = (model((z0 + step)[None]) - model((z0 - step)[None]))[0] / (2 * eps)
        torch.testing.assert_close(jac[:, j], fd, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("cls", ALL)
def test_pickle_round_trip(cls):
    model = _make(cls, torch.float32)
    clone = pickle.loads(pickle.dumps(model))
    z = _z(9, torch.float32)
    torch.testing.assert_close(clone(z), model(z), rtol=0, atol=0)


# --------------------------------------------------------------------------
# OnsagerNet (Yu et al. 2021)


@ONSAGER_LAYOUTS
def test_onsager_matrices_psd_and_antisymmetric(layout):
    model = _make(OnsagerNet, alpha=0.01, **layout)
    m, w = model.matrices(_z(64))
    assert m.shape == w.shape == (64, D, D)
    torch.testing.assert_close(m, m.transpose(-1, -2))
    torch.testing.assert_close(w, -w.transpose(-1, -2), rtol=0, atol=0)
    assert torch.linalg.eigvalsh(m).min() >= 0.01 - 1e-10


@ONSAGER_LAYOUTS
def test_onsager_forward_matches_formula(layout):
    model = _make(OnsagerNet, **layout)
    z = _z(6)
    # One sample at a time, so no batching shortcut is involved.
    grad_v = torch.stack(
        [
            torch.autograd.functional.jacobian(
                lambda v: model.potential(v[None])[0], zi
            )
            for zi in z
        ]
    )
    m, w = model.matrices(z)
    expected = -torch.einsum("bij,bj->bi", m + w, grad_v)
    torch.testing.assert_close(model(z), expected)


@ONSAGER_LAYOUTS
def test_onsager_potential_bounded_below(layout):
    model = _make(OnsagerNet, beta=0.1, **layout)
    z = 10 * _z(256)
    v = model.potential(z)
    assert v.shape == (256,)
    assert (v >= 0.1 * z.square().sum(-1) - 1e-12).all()


@ONSAGER_LAYOUTS
def test_onsager_dissipates_potential(layout):
    model = _make(OnsagerNet, **layout)
    z = _z(64).requires_grad_(True)
    (grad_v,) = torch.autograd.grad(model.potential(z).sum(), z)
    dv_dt = (grad_v * model(z)).sum(-1)
    # dV/dt = -∇Vᵀ M ∇V ≤ -alpha |∇V|² pointwise.
    assert (dv_dt <= -model.alpha * grad_v.square().sum(-1) + 1e-12).all()

    traj = _rollout(model, _z(16), dt=0.02, n_steps=100)
    v = model.potential(traj.reshape(-1, D)).reshape(traj.shape[:2])
    assert (v[1:] <= v[:-1] + 1e-12).all()
    assert (v[-1] < v[0]).all()


def test_onsager_forcing():
    plain = _make(OnsagerNet)
    forced = _make(OnsagerNet, forcing=True)
    assert plain.force_net is None and forced.force_net is not None
    forced.load_state_dict(plain.state_dict(), strict=False)
    z = _z()
    torch.testing.assert_close(forced(z) - plain(z), forced.force_net(z))


def test_onsager_shared_layout_reads_every_head_from_one_trunk():
    model = _make(OnsagerNet, shared=True, activation="requr", forcing=True)
    assert "shared=True" in repr(model)
    assert isinstance(model.potential_net, torch.nn.Linear)
    assert isinstance(model.matrix_net, torch.nn.Linear)
    assert isinstance(model.force_net, torch.nn.Linear)
    z = _z()
    h = model.trunk(z)
    # The trunk's second layer is residual: h2 = act(W2 h1 + b2) + h1.
    first, second = model.trunk.layers
    h1 = model.trunk.activation(first(z))
    torch.testing.assert_close(h, model.trunk.activation(second(h1)) + h1)
    m, w = model.matrices(z)
    grad_v = torch.autograd.functional.jacobian(lambda v: model.potential(v).sum(), z)
    expected = -torch.einsum("bij,bj->bi", m + w, grad_v) + model.force_net(h)
    torch.testing.assert_close(model(z), expected)


@pytest.mark.parametrize("grad", [True, False])
def test_onsager_shared_layout_runs_the_trunk_once_per_call(grad):
    model = _make(OnsagerNet, shared=True, forcing=True)
    calls = []
    model.trunk.register_forward_hook(lambda *_: calls.append(1))
    with torch.set_grad_enabled(grad):
        model(_z())
    assert len(calls) == 1


def test_onsager_shared_layout_needs_a_hidden_layer():
    with pytest.raises(ValueError, match="hidden"):
        OnsagerNet(3, hidden=(), shared=True)


def test_onsager_needs_non_negative_alpha_and_beta():
    # Either negative would void the dissipation guarantee.
    with pytest.raises(ValueError, match="alpha >= 0"):
        OnsagerNet(3, alpha=-0.5)
    with pytest.raises(ValueError, match="beta >= 0"):
        OnsagerNet(3, beta=-1.0)
    OnsagerNet(3, alpha=0.0, beta=0.0)


def test_requr_activation():
    from skmacro.nn.mlp import make_activation

    act = make_activation("requr")
    x = torch.tensor([-1.0, 0.0, 0.25, 0.5, 2.0], dtype=torch.float64)
    torch.testing.assert_close(
        act(x), torch.tensor([0.0, 0.0, 0.0625, 0.25, 1.75], dtype=torch.float64)
    )


# --------------------------------------------------------------------------
# GFINN (Zhang et al. 2022)


def _gradients(model, z):
    z = z.detach().requires_grad_(True)
    (grad_e,) = torch.autograd.grad(model.energy(z).sum(), z)
    (grad_s,) = torch.autograd.grad(model.entropy(z).sum(), z)
    return grad_e, grad_s


def _state_gradients(model, z):
    """∇E and ∇S on the GENERIC state: (∇E(z), 1) and (∇S(z), 1/T) with
    the bath, written out here independently of the model's code."""
    grad_e, grad_s = _gradients(model, z)
    if model.bath:
        one = torch.ones_like(grad_e[:, :1])
        grad_e = torch.cat([grad_e, one], -1)
        grad_s = torch.cat([grad_s, one / model.bath_temperature.detach()], -1)
    return grad_e, grad_s


@pytest.mark.parametrize("bath", [True, False])
def test_gfinn_structure(bath):
    model = _make(GFINN, bath=bath)
    with torch.no_grad():
        if bath:  # a bath temperature away from its starting value
            model.log_bath_temperature.fill_(0.7)
    z = _z(64)
    ell, m = model.matrices(z)
    grad_e, grad_s = _state_gradients(model, z)
    n = D + 1 if bath else D
    assert ell.shape == m.shape == (64, n, n)
    assert model.energy(z).shape == model.entropy(z).shape == (64,)
    torch.testing.assert_close(ell, -ell.transpose(-1, -2), rtol=0, atol=1e-15)
    torch.testing.assert_close(m, m.transpose(-1, -2), rtol=0, atol=1e-15)
    assert torch.linalg.eigvalsh(m).min() >= -1e-12
    # Degeneracy, to float64 round-off relative to the matrix sizes.
    scale_l = ell.abs().amax() * grad_s.abs().amax()
    scale_m = m.abs().amax() * grad_e.abs().amax()
    assert (ell @ grad_s[..., None]).abs().max() <= 1e-13 * scale_l
    assert (m @ grad_e[..., None]).abs().max() <= 1e-13 * scale_m
    # ...while the brackets themselves are far from zero, the bath's rows
    # included.
    assert scale_l > 1e-4 and scale_m > 1e-4
    if bath:
        assert m[:, -1].abs().amax() > 1e-4 and ell[:, -1].abs().amax() > 1e-4


@pytest.mark.parametrize("bath", [True, False])
def test_gfinn_forward_matches_formula(bath):
    model = _make(GFINN, bath=bath)
    z = _z(8)
    ell, m = model.matrices(z)
    grad_e, grad_s = _state_gradients(model, z)
    expected = torch.einsum("bij,bj->bi", ell, grad_e) + torch.einsum(
        "bij,bj->bi", m, grad_s
    )
    torch.testing.assert_close(model(z), expected[:, :D])
    if bath:
        torch.testing.assert_close(model.bath_rate(z), expected[:, D])


def test_gfinn_without_bath_conserves_energy_and_produces_entropy():
    model = _make(GFINN, bath=False)
    z = _z(64)
    grad_e, grad_s = _gradients(model, z)
    dz = model(z)
    de_dt = (grad_e * dz).sum(-1)
    ds_dt = (grad_s * dz).sum(-1)
    assert de_dt.abs().max() <= 1e-12 * grad_e.abs().max() * dz.abs().max()
    assert (ds_dt >= -1e-15).all()

    z0 = _z(16)

    def levels(dt, n_steps):
        traj = _rollout(model, z0, dt=dt, n_steps=n_steps)
        flat = traj.reshape(-1, D)
        e = model.energy(flat).reshape(traj.shape[:2]).detach()
        s = model.entropy(flat).reshape(traj.shape[:2]).detach()
        return traj, e, s

    traj, e, s = levels(0.02, 100)
    # The states really moved, with S non-decreasing and rising...
    assert (traj[-1] - traj[0]).norm(dim=-1).min() > 1e-3
    assert (s[1:] >= s[:-1] - 1e-12).all()
    assert (s[-1] > s[0]).all()
    # ...on a level set of E: what drift there is, is RK4's O(dt⁴) error.
    drift = (e - e[0]).abs().max()
    _, e_fine, _ = levels(0.01, 200)
    drift_fine = (e_fine - e_fine[0]).abs().max()
    assert drift < 1e-6 * (s[-1] - s[0]).min()
    assert drift_fine < drift / 8 or drift < 1e-13
    with pytest.raises(ValueError, match="bath=True"):
        model.free_energy(z)
    with pytest.raises(ValueError, match="bath=True"):
        model.bath_rate(z)


def test_gfinn_with_bath_conserves_total_energy_and_lowers_free_energy():
    model = _make(GFINN)
    with torch.no_grad():
        model.log_bath_temperature.fill_(-0.5)
    z = _z(64)
    grad_e, grad_s = _gradients(model, z)
    with torch.no_grad():
        dz, bath = model(z), model.bath_rate(z)
    temperature = model.bath_temperature.detach()
    # The bath receives exactly the energy the latent state loses, and the
    # total entropy S(z) + σ/T never falls.
    de_dt = (grad_e * dz).sum(-1)
    torch.testing.assert_close(
        bath, -de_dt.detach(), rtol=0, atol=1e-12 * de_dt.abs().max().item()
    )
    assert bath.abs().max() > 1e-3  # energy does flow
    assert ((grad_s * dz).sum(-1) + bath / temperature >= -1e-13).all()

    # Along rollouts of z alone, F = E - T S never increases, and falls.
    traj = _rollout(model, _z(16), dt=0.02, n_steps=100)
    flat = traj.reshape(-1, D)
    f = model.free_energy(flat).reshape(traj.shape[:2]).detach()
    assert (traj[-1] - traj[0]).norm(dim=-1).min() > 1e-3
    assert (f[1:] <= f[:-1] + 1e-12).all()
    assert (f[-1] < f[0]).all()

    # F grows like confinement |z|² / 2 or faster far out, for any weights,
    # so the sets F <= F(z(0)) that hold the rollouts are bounded.
    far = 1e3 * torch.nn.functional.normalize(_z(64), dim=-1)
    growth = model.free_energy(far).detach() / far.square().sum(-1)
    assert (growth > 0.45 * model.confinement).all()


def test_gfinn_with_bath_fits_a_damped_spiral():
    # A stable focus attracting the whole plane: impossible for a closed
    # GENERIC field (see the GFINN Notes), allowed with the bath.
    rotation = torch.tensor([[-0.2, 1.0], [-1.0, -0.2]])
    z = 2 * torch.rand(256, 2) - 1
    z_test = 2 * torch.rand(256, 2) - 1

    def fitted_error(bath):
        torch.manual_seed(1)
        model = GFINN(2, hidden=(32, 32), bath=bath)
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
        for _ in range(300):
            optimizer.zero_grad()
            (model(z) - z @ rotation.T).square().mean().backward()
            optimizer.step()
        with torch.no_grad():
            truth = z_test @ rotation.T
            return ((model(z_test) - truth).norm() / truth.norm()).item()

    # 0.18 and 0.49 when written.
    assert fitted_error(bath=True) < 0.25
    assert fitted_error(bath=False) > 0.35


def test_gfinn_fits_a_generic_system():
    # Rotation about the axis a plus relaxation towards it on spheres: GENERIC
    # with E = |z|²/2 (conserved), S = a·z (produced), L∇E = a × z and
    # M∇S = (|z|² I - z zᵀ) a / 2.
    axis = torch.tensor([0.0, 0.0, 1.0])

    def field(z):
        rotation = torch.linalg.cross(axis.expand_as(z), z, dim=-1)
        relaxation = z.square().sum(-1, keepdim=True) * axis - (z @ axis)[:, None] * z
        return rotation + 0.5 * relaxation

    def error(model, z):
        with torch.no_grad():
            return ((model(z) - field(z)).norm() / field(z).norm()).item()

    z = 2 * torch.rand(256, 3) - 1
    z_test = 2 * torch.rand(256, 3) - 1
    model = GFINN(3, hidden=(32, 32))
    before = error(model, z_test)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(200):
        optimizer.zero_grad()
        (model(z) - field(z)).square().mean().backward()
        optimizer.step()
    assert before > 0.5
    assert error(model, z_test) < 0.25


def test_gfinn_needs_two_dimensions_and_a_non_negative_confinement():
    with pytest.raises(ValueError, match="n_components >= 2"):
        GFINN(1)
    with pytest.raises(ValueError, match="confinement >= 0"):
        GFINN(3, confinement=-0.1)


# --------------------------------------------------------------------------
# Registry


def test_registry_names():
    assert set(LATENT_MODELS) == {"mlp", "onsager", "gfinn"}
    for name, cls in LATENT_MODELS.items():
        assert resolve_latent_model(name) is cls


def test_resolve_accepts_module_subclass():
    class Custom(torch.nn.Module):
        pass

    assert resolve_latent_model(Custom) is Custom
    assert resolve_latent_model(OnsagerNet) is OnsagerNet


def test_resolve_unknown_name_suggests():
    with pytest.raises(ValueError, match="did you mean 'onsager'") as info:
        resolve_latent_model("onsagr")
    assert "['gfinn', 'mlp', 'onsager']" in str(info.value)
    with pytest.raises(ValueError) as info:
        resolve_latent_model("transformer")
    assert "did you mean" not in str(info.value)


@pytest.mark.parametrize("bad", [3, None, OnsagerNet(2), dict, ["mlp"]])
def test_resolve_rejects_other_types(bad):
    with pytest.raises(TypeError, match="torch.nn.Module subclass"):
        resolve_latent_model(bad)
