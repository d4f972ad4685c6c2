"""Closure networks: the learned part ``phi_hat`` of the encoder
``phi(x) = (phi*(x), phi_hat(x))``.

Every closure network satisfies one protocol, which is all that
:class:`~skmacro.nn.ClosureAutoencoderModule` (and so
:class:`~skmacro.ClosureAutoencoder`) asks of it:

``build(n_features, n_outputs)``
    Create the layers for inputs of width N and k outputs (k may be 0);
    called once, on the autoencoder's own copy; returns the closure.
``check_n_features(n_features)``
    Raise a ``ValueError`` if states of this width cannot be encoded.
``size_agnostic``
    Class attribute: True if one fitted closure encodes states of any number
    of particles.
``prepare(batches)``
    Data-dependent set-up (input and target scales) before training;
    ``batches()`` returns a fresh iterable of float32 tensors
    (chunk, N) over the training rows.
``forward(x)``
    (B, N) -> (B, k), ``x`` in the units of the data.
``target(x)``, ``target_width``, ``target_to_user(t)``
    What the decoder reconstructs, (B, N) -> (B, T) in standardised units,
    and the map back to the user's units (returned by ``inverse_transform``).
``jacobian(x)``
    The Jacobians ``d forward / d x`` at the rows of ``x`` as a structured
    batch offering ``columns(index)`` (B, k, m), ``matvec(v)`` (B, N) ->
    (B, k) or (B, N, r) -> (B, k, r), ``gram()`` (B, k, k), ``to`` and
    ``detach``; differentiable with respect to the parameters when gradient
    recording is on.
``parameter_groups(lr)`` (optional)
    Extra optimiser groups, e.g. a scaled rate for a wide first layer.
``floats_per_row(n_features)`` (optional)
    Floats of work one state's Jacobian holds, so that the autoencoder
    sizes its chunks by it (default: ``n_features``).

**Feature closures.** A closure whose learned part reads the state only
through parameter-free features, ``phi_hat(x) = head(s(x))`` with ``s`` of
width P, may say so by offering, beyond the members above:

``features(x)``
    (B, N) -> (B, P), parameter-free (the same function before and after
    training, no gradient to any parameter).
``feature_width``
    P.
``head``
    The learned map, a module (B, P) -> (B, k); ``forward(x) =
    head(features(x))``.
``prepare_features(s)``
    Data-dependent set-up from the features (n_rows, P) of the training
    rows, in place of ``prepare``.
``target_from_features(s)``
    The reconstruction target from the features, (B, P) -> (B, T), so
    ``target(x) = target_from_features(features(x))``.
``feature_jacobian(x)``
    ``F = ds/dx`` at the rows of ``x``, parameter-free, as a batch offering
    ``columns(index)`` (B, P, m), ``gram(left=None)`` (``F F^T``, (B, P, P),
    or ``L F F^T L^T`` for ``left`` ``L`` of shape (B, q, P)),
    ``matvec(v)`` ((B, N) -> (B, P); (B, N, r) -> (B, P, r)), ``outputs``
    (the features ``s`` at the same rows), ``to`` and ``detach``, and
    optionally ``rmatvec(w)`` (``F^T w``, (B, P, r) -> (B, N, r)).

The closure's Jacobian is then ``rho'(s) F`` with ``rho'`` the head's own
(P-wide, cheap) Jacobian: :class:`FeatureClosureJacobian` forms its products
for any feature closure (with ``rmatvec``, outside gradient recording, as
the k rows ``(F^T rho'^T)^T`` formed once: exact and O(k N) per state),
and :class:`FeatureClosure` implements the members that follow from
``features``, ``head`` and ``feature_jacobian``.
:class:`~skmacro.ClosureAutoencoder` trains a feature closure on its
features computed once (:func:`is_feature_closure`), so an epoch does not
depend on N.

:class:`MLPClosure` is the closure on the raw state, right for grids whose
coordinates have a fixed meaning.
"""

import numpy as np
import torch
from torch import nn

from .._standardize import column_moments, nonzero_scale
from .._validation import check_choice
from .mlp import MLP

INPUT_SCALINGS = ("global", "feature")


class MLPClosure(nn.Module):
    """An MLP on the standardised raw state, ``phi_hat(x) = MLP((x - mu) / s)``.

    Inputs are centred feature-wise and scaled as ``input_scaling`` says; the
    decoder reconstructs the state in those units (``target``).

    Parameters
    ----------
    hidden : sequence of int, default=(64, 64)
        Hidden widths.
    activation : str, default="softplus"
        Name from :data:`skmacro.nn.mlp.ACTIVATIONS`; smooth, since the
        Jacobian is used.
    input_scaling : {"global", "feature"}, default="global"
        ``"global"`` divides every centred feature by one common scale (the
        root-mean-square of the features' standard deviations), which keeps
        their relative magnitudes; ``"feature"`` divides each by its own
        standard deviation.
    base_fan_in : int or None, default=8192
        The first layer learns at ``lr * min(1, base_fan_in / n_features)``
        (:meth:`parameter_groups`): Adam moves each first-layer
        pre-activation by up to about ``lr * n_features`` per step, so a full
        rate on a very wide input saturates the closure. None keeps ``lr``.

    Attributes
    ----------
    n_outputs : int
    target_width : int
        The number of features N (the decoder reconstructs the state).
    net : MLP or None
        None when ``n_outputs`` is 0.

    Examples
    --------
    >>> import torch
    >>> closure = MLPClosure(hidden=(8,)).build(n_features=5, n_outputs=2)
    >>> closure.prepare(lambda: [torch.randn(20, 5)])
    >>> x = torch.randn(3, 5)
    >>> closure(x).shape, closure.jacobian(x).gram().shape
    (torch.Size([3, 2]), torch.Size([3, 2, 2]))
    """

    size_agnostic = False

    def __init__(
        self,
        hidden=(64, 64),
        activation="softplus",
        input_scaling="global",
        base_fan_in=8192,
    ):
        super().__init__()
        self.hidden = tuple(int(h) for h in hidden)
        self.activation = activation
        self.input_scaling = check_choice(
            "input_scaling", input_scaling, INPUT_SCALINGS
        )
        self.base_fan_in = base_fan_in
        self.n_features = self.n_outputs = None

    def build(self, n_features, n_outputs):
        """Create the network for ``n_features`` inputs and ``n_outputs``
        closure variables; returns self."""
        self.n_features, self.n_outputs = int(n_features), int(n_outputs)
        self.net = (
            MLP(self.n_features, self.n_outputs, self.hidden, self.activation)
            if self.n_outputs
            else None
        )
        self.register_buffer("x_mean", torch.zeros(self.n_features))
        self.register_buffer("x_scale", torch.ones(self.n_features))
        return self

    @property
    def target_width(self):
        return self.n_features

    def check_n_features(self, n_features):
        """Raise a ``ValueError`` unless ``n_features`` is the width built for."""
        if n_features != self.n_features:
            raise ValueError(
                f"X has {n_features} features, but the MLP closure was built for "
                f"{self.n_features}: its first layer reads each coordinate "
                "(a closure for particle systems of any size is "
                "skmacro.nn.ParticleSetClosure)"
            )

    def prepare(self, batches):
        """Set the input centre and scale from the training rows."""
        mean, var = column_moments(batches)
        scale = np.sqrt(var)
        if self.input_scaling == "global":
            scale = np.full_like(scale, np.sqrt(np.mean(var)))
        self.x_mean.copy_(torch.as_tensor(mean))
        self.x_scale.copy_(torch.as_tensor(nonzero_scale(scale, mean)))

    def standardize(self, x):
        """``(x - mean) / scale``, shape (B, N)."""
        return (x - self.x_mean).div_(self.x_scale)

    def forward(self, x):
        if self.net is None:
            return x.new_zeros(len(x), 0)
        return self.net(self.standardize(x))

    def target(self, x):
        """The standardised state, shape (B, N)."""
        return self.standardize(x)

    def target_to_user(self, t):
        """Standardised states back in the units of ``x``."""
        return t * self.x_scale + self.x_mean

    def jacobian(self, x):
        """Closure Jacobians at the rows of ``x`` as an :class:`MLPJacobian`.

        The first layer is linear, ``a = W x_s + c`` with
        ``x_s = (x - mean) / scale``, so the Jacobian is ``K W S^-1`` with
        ``K`` the (k, width) Jacobian of the remaining layers in ``a`` and
        ``S = diag(scale)``; the k x N product is never formed.
        """
        if self.net is None:
            return None
        first, rest = self.net[0], nn.Sequential(*list(self.net)[1:])
        K = batch_jacobian(rest, first(self.standardize(x)))
        return MLPJacobian(K, first.weight / self.x_scale)

    def frozen(self, dtype=torch.float64):
        """A read-only view for many Jacobians at the current parameters
        (no gradients): the first layer's weight in the units of ``x`` and
        its Gram matrix ``W W^T`` are formed once, in ``dtype``, instead of
        for every batch (at N = 307,200 the Gram matrix alone costs more
        than the rest of a batch's products).

        Returns
        -------
        FrozenMLPClosure
        """
        return FrozenMLPClosure(self, dtype)

    def parameter_groups(self, lr):
        """The first layer's weight at the fan-in-scaled rate (``base_fan_in``),
        or no group when the input is not wider than ``base_fan_in``."""
        if self.net is None or self.base_fan_in is None:
            return []
        if self.n_features <= self.base_fan_in:
            return []
        rate = lr * self.base_fan_in / self.n_features
        return [{"params": [self.net[0].weight], "lr": rate}]

    @property
    def first_layer(self):
        """The first linear layer (None without outputs)."""
        return None if self.net is None else self.net[0]


class FrozenMLPClosure:
    """An :class:`MLPClosure` at fixed parameters whose Jacobians share the
    parameter-only factors (see :meth:`MLPClosure.frozen`); valid until the
    parameters change.

    Parameters
    ----------
    closure : MLPClosure
    dtype : torch.dtype
        Of the Jacobians.
    """

    def __init__(self, closure, dtype=torch.float64):
        self.closure = closure
        self.n_outputs = closure.n_outputs
        with torch.no_grad():
            W = (closure.net[0].weight / closure.x_scale).to(dtype)
            self.W, self.WWt = W, W @ W.T

    def __call__(self, x):
        return self.closure(x)

    def jacobian(self, x):
        """Like :meth:`MLPClosure.jacobian`, in the view's dtype; the
        closure's values at ``x`` come along as ``outputs``."""
        net = self.closure.net
        rest = nn.Sequential(*list(net)[1:])
        with torch.no_grad():
            a = net[0](self.closure.standardize(x))
            K = batch_jacobian(rest, a)
            outputs = rest(a)
        return MLPJacobian(K.to(self.W.dtype), self.W, self.WWt, outputs)


class MLPJacobian:
    """A batch of MLP-closure Jacobians ``K W`` kept in factors.

    Products cost O((k + m) width) per sample for m selected coordinates
    instead of O(k N).

    Parameters
    ----------
    K : torch.Tensor of shape (batch, k, width)
        Jacobian of the layers after the first, in the first layer's output.
    W : torch.Tensor of shape (width, N)
        The first layer's weight in the units of ``x``.
    WWt : torch.Tensor of shape (width, width), optional
        ``W W^T`` when already known.
    outputs : torch.Tensor of shape (batch, k), optional
        The closure's values at the same rows, when they came along.
    """

    def __init__(self, K, W, WWt=None, outputs=None):
        self.K, self.W, self.WWt, self.outputs = K, W, WWt, outputs

    def _map(self, fn):
        WWt = None if self.WWt is None else fn(self.WWt)
        outputs = None if self.outputs is None else fn(self.outputs)
        return MLPJacobian(fn(self.K), fn(self.W), WWt, outputs)

    def to(self, *args, **kwargs):
        """The factors moved or cast with ``torch.Tensor.to`` (no copy of a
        factor already there)."""
        return self._map(lambda t: t.to(*args, **kwargs))

    def detach(self):
        """The factors detached from the autograd graph."""
        return self._map(torch.Tensor.detach)

    def columns(self, index):
        """``J[b, :, index[b]]``: index (batch, m) int64 -> (batch, k, m)."""
        return self.K @ self.W.T[index].transpose(1, 2)

    def matvec(self, v):
        """``J v``: (batch, N) -> (batch, k), or (batch, N, r) -> (batch, k, r)."""
        if v.ndim == 2:
            return (self.K @ (v @ self.W.T).unsqueeze(-1)).squeeze(-1)
        # W (width, N) against every sample's (N, r) in one matrix product,
        # without broadcasting W to (batch, width, N).
        batch, n, r = v.shape
        Wv = self.W @ v.transpose(0, 1).reshape(n, batch * r)
        return self.K @ Wv.reshape(-1, batch, r).transpose(0, 1)

    def gram(self):
        """``J J^T = K (W W^T) K^T``, shape (batch, k, k)."""
        WWt = self.W @ self.W.T if self.WWt is None else self.WWt
        return self.K @ WWt @ self.K.transpose(1, 2)


def batch_jacobian(fn, x):
    """``(batch, out, in)`` Jacobians of a row-wise ``fn`` at the rows of ``x``:
    one ``torch.func.jacrev`` of the batch sum (``out`` vector-Jacobian
    products over the whole batch) rather than a vmapped per-row one."""
    return torch.func.jacrev(lambda rows: fn(rows).sum(0))(x).movedim(0, 1)


#: What makes a closure a feature closure (see the module docstring).
FEATURE_CLOSURE_MEMBERS = (
    "features",
    "feature_width",
    "head",
    "prepare_features",
    "target_from_features",
    "feature_jacobian",
)


def is_feature_closure(closure):
    """Whether ``closure`` offers the feature-closure members (module
    docstring), so that it may be trained on its features computed once.

    Parameters
    ----------
    closure : torch.nn.Module

    Returns
    -------
    bool
    """
    return all(hasattr(closure, name) for name in FEATURE_CLOSURE_MEMBERS)


class FeatureHead(nn.Module):
    """The learned map of a feature closure: an MLP on standardised features,
    ``head(s) = MLP((s - mean) / scale)``.

    Parameters
    ----------
    n_features : int
        Width P of the features.
    n_outputs : int
        Number k of closure variables (0: no layers, empty outputs).
    hidden : sequence of int
    activation : str

    Attributes
    ----------
    feature_mean, feature_scale : torch.Tensor of shape (P,)
        Buffers set by :meth:`set_scales`.
    net : MLP or None
    """

    def __init__(self, n_features, n_outputs, hidden, activation):
        super().__init__()
        self.n_features, self.n_outputs = int(n_features), int(n_outputs)
        self.net = (
            MLP(self.n_features, self.n_outputs, tuple(hidden), activation)
            if self.n_outputs
            else None
        )
        self.register_buffer("feature_mean", torch.zeros(self.n_features))
        self.register_buffer("feature_scale", torch.ones(self.n_features))

    def standardize(self, s):
        """``(s - mean) / scale``, shape (B, P)."""
        return (s - self.feature_mean) / self.feature_scale

    def unstandardize(self, t):
        """The inverse of :meth:`standardize`, shape (B, P)."""
        return t * self.feature_scale + self.feature_mean

    def forward(self, s):
        s = s.to(self.feature_mean.dtype)
        if self.net is None:
            return s.new_zeros(len(s), 0)
        return self.net(self.standardize(s))

    @torch.no_grad()
    def set_scales(self, s, groups=None, floor=1e-2):
        """Centre and scale each feature by its mean and standard deviation
        over the rows of ``s``.

        A feature that barely varies would be magnified without bound, and
        with it whatever noise it shows on new data; its scale is therefore
        kept above ``floor`` times the root-mean-square standard deviation
        of its group (features of a group share units).

        Parameters
        ----------
        s : torch.Tensor of shape (n_rows, P)
        groups : torch.Tensor of shape (P,), int, optional
            Group of each feature; None puts all in one group.
        floor : float, default=1e-2
        """
        s = torch.as_tensor(s, dtype=torch.float64)
        mean, std = s.mean(0), s.std(0, correction=0)
        groups = (
            torch.zeros(len(mean), dtype=torch.long)
            if groups is None
            else torch.as_tensor(groups, dtype=torch.long)
        )
        count = torch.bincount(groups).clamp_min(1).double()
        typical = torch.sqrt(torch.bincount(groups, std.square()) / count)
        scale = torch.sqrt(std.square() + (floor * typical[groups]) ** 2)
        self.feature_mean.copy_(mean)
        self.feature_scale.copy_(nonzero_scale(scale, mean))


class FeatureClosure(nn.Module):
    """Base class of feature closures ``phi_hat(x) = head(s(x))`` (see the
    module docstring).

    Subclasses implement ``build`` (creating ``self.head``, a
    :class:`FeatureHead`, with :meth:`make_head`), ``check_n_features``,
    ``features``, ``feature_width`` and ``feature_jacobian``, and may set
    ``feature_groups`` (a (P,) int tensor, the groups of
    :meth:`FeatureHead.set_scales`). The reconstruction target is the
    standardised features, and ``inverse_transform`` gives back the
    features in their own units.
    """

    size_agnostic = False
    feature_groups = None

    def make_head(self, n_outputs, hidden, activation):
        """Create ``self.head`` for ``n_outputs`` closure variables."""
        self.n_outputs = int(n_outputs)
        self.head = FeatureHead(self.feature_width, self.n_outputs, hidden, activation)
        return self.head

    @property
    def target_width(self):
        """Width of the reconstruction target: P."""
        return self.feature_width

    def forward(self, x):
        """Closure variables ``head(features(x))``, (B, N) -> (B, k)."""
        s = self.features(x)
        return self.head(s)

    def target(self, x):
        """The standardised features, (B, N) -> (B, P)."""
        return self.target_from_features(self.features(x))

    def target_from_features(self, s):
        """The standardised features, (B, P) -> (B, P)."""
        return self.head.standardize(s)

    def target_to_user(self, t):
        """Standardised features back in their own units, (B, P) -> (B, P)."""
        return self.head.unstandardize(torch.as_tensor(t))

    @torch.no_grad()
    def prepare(self, batches):
        """Feature scales from the training rows streamed by ``batches()``
        (see :meth:`prepare_features`)."""
        self.prepare_features(torch.cat([self.features(x) for x in batches()]))

    def prepare_features(self, s):
        """Set the head's standardisation from the features (n_rows, P) of
        the training rows."""
        self.head.set_scales(s, self.feature_groups)

    def jacobian(self, x):
        """``d head(s(x)) / dx`` at the rows of ``x`` as a
        :class:`FeatureClosureJacobian`; its ``outputs`` are the closure
        variables."""
        F = self.feature_jacobian(x)
        s = F.outputs
        if self.n_outputs:
            A = batch_jacobian(self.head, s)
        else:
            A = s.new_zeros(len(s), 0, s.shape[1])
        return FeatureClosureJacobian(A, F, self.head(s))


class FeatureClosureJacobian:
    """Jacobians ``rho'(s) F`` of a feature closure, kept as the head's
    Jacobian and the features' structured Jacobian.

    Parameters
    ----------
    head_jacobian : torch.Tensor of shape (B, k, P)
        ``rho'(s)`` at the rows' features.
    features : feature Jacobian batch
        ``F = ds/dx`` (see the module docstring).
    outputs : torch.Tensor of shape (B, k), optional
        The closure variables at the same rows.
    """

    def __init__(self, head_jacobian, features, outputs=None, rows=None):
        self.head_jacobian, self.features, self.outputs = (
            head_jacobian,
            features,
            outputs,
        )
        self._rows = rows

    def to(self, *args, **kwargs):
        """The factors moved or cast like ``torch.Tensor.to``."""
        outputs = None if self.outputs is None else self.outputs.to(*args, **kwargs)
        rows = None if self._rows is None else self._rows.to(*args, **kwargs)
        return FeatureClosureJacobian(
            self.head_jacobian.to(*args, **kwargs),
            self.features.to(*args, **kwargs),
            outputs,
            rows,
        )

    def detach(self):
        """The factors detached from the autograd graph."""
        outputs = None if self.outputs is None else self.outputs.detach()
        return FeatureClosureJacobian(
            self.head_jacobian.detach(), self.features.detach(), outputs, self._rows
        )

    def rows(self):
        """``J`` itself, (B, k, N), formed once as ``(F^T rho'^T)^T`` when the
        features offer ``rmatvec`` and no gradient to the head is needed;
        None otherwise (the products then go through ``F``'s structure)."""
        A = self.head_jacobian
        if self._rows is None and not (
            A.requires_grad or not hasattr(self.features, "rmatvec")
        ):
            with torch.no_grad():
                self._rows = self.features.rmatvec(A.transpose(1, 2)).transpose(1, 2)
            self._rows = self._rows.to(A)
        return self._rows

    def columns(self, index):
        """``J[b, :, index[b]]``: index (B, m) int64 -> (B, k, m)."""
        J = self.rows()
        if J is not None:
            return torch.gather(J, 2, index[:, None].expand(-1, J.shape[1], -1))
        return self.head_jacobian @ self.features.columns(index)

    def matvec(self, v):
        """``J v``: (B, N) -> (B, k), or (B, N, r) -> (B, k, r)."""
        J = self.rows()
        if J is not None:
            out = J @ (v[..., None] if v.ndim == 2 else v).to(J)
            return out[..., 0] if v.ndim == 2 else out
        Fv = self.features.matvec(v)
        if v.ndim == 2:
            return (self.head_jacobian @ Fv.unsqueeze(-1)).squeeze(-1)
        return self.head_jacobian @ Fv

    def gram(self):
        """``J J^T = rho' (F F^T) rho'^T``, shape (B, k, k).

        Differentiable in the head's parameters when ``rho'`` is: ``F F^T``
        (parameter-free) is then formed first and multiplied on both sides;
        otherwise ``rho'`` enters the sum over particles directly, which is
        cheaper when k < P.
        """
        J = self.rows()
        if J is not None:
            return J @ J.transpose(1, 2)
        A = self.head_jacobian
        if A.requires_grad:
            G = self.features.gram().to(A)
            return A @ G @ A.transpose(1, 2)
        return self.features.gram(left=A)
