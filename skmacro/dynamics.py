"""``PartialForceDynamics``: a latent vector field learned from partial
microscopic forces (paper Section 4.2)."""

from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import RegressorMixin
from sklearn.metrics import r2_score
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted
from torch import nn

from ._control_variate import NeighbourForceMeans
from ._net import SkmacroNet
from ._observations import PartialForces
from ._validation import check_choice, check_states
from .nn.scaling import ScaledVectorField
from .nn.vector_fields import LATENT_MODELS, resolve_latent_model

LOSSES = ("partial", "x", "z")


class QuadraticFormLoss(nn.Module):
    """Mean over configurations of ``c - 2 g^T b + g^T A g``.

    Every training loss of :class:`PartialForceDynamics` has this form (see
    :func:`partial_force_statistics`), so training costs O(d^2) per
    configuration whatever the microscopic dimension N.

    Shapes: ``g`` and ``b`` (batch, d), ``A`` (batch, d, d), ``c`` (batch,).
    """

    def forward(self, g, b, A, c):
        # A batched matrix-vector product is cheaper than a three-operand
        # einsum at the batch sizes used here.
        Ag = torch.matmul(A, g.unsqueeze(-1)).squeeze(-1)
        return torch.mean(c + torch.sum(g * (Ag - 2.0 * b), dim=-1))


def partial_force_statistics(encoder, X, forces, loss="partial", control=None):
    """One pass over the data: per-configuration statistics of the loss.

    With ``J = phi'(x)`` (d x N), ``G = J J^T``, ``W = diag(w)`` the
    Horvitz-Thompson weights (``1/pi_i`` on computed coordinates, 0
    elsewhere) and ``f`` the forces (0 where not computed):

    * ``loss="partial"`` (L_x,p, Eq. 12) and ``"x"`` (L_x, Eq. 10, all
      weights 1): ``sum_I w_i ||f_i - P_i g||^2 = c - 2 g^T b + g^T A g`` with
      ``P = J^T G^-1``, ``b = G^-1 J W f``, ``A = G^-1 J W J^T G^-1``,
      ``c = sum w_i ||f_i||^2``;
    * ``loss="z"`` (L_z, Eq. 9): ``||y - g||^2`` with ``y = J W f`` (the
      exact ``dz/dt`` with all forces, its unbiased estimate otherwise):
      ``b = y``, ``A = I``, ``c = ||y||^2``.

    With a control variate ``h`` (forces guessed from other configurations),
    the partial loss is taken on the residuals,
    ``sum_I w_i ||(f_i - h_i) - P_i (g - J h)||^2``: its expectation over the
    mask is still L_x plus a constant (the cross term vanishes because
    ``P^T (I - P J) = 0``), with far less variance when ``h`` is close to
    ``f``; ``y`` becomes ``J h + J W (f - h)``.

    Jacobians are used chunk by chunk in factored form
    (:meth:`ClosureAutoencoderModule.jacobian_factors`): only the columns of
    ``J`` at computed coordinates, ``J J^T`` and ``J h`` are formed, so the
    pass costs O(d* N + d (m + width)) per configuration with m computed
    coordinates, not O(d^2 N).

    Parameters
    ----------
    encoder : ClosureAutoencoder
        Fitted encoder.
    X : ndarray of shape (n_samples, N)
        Microscopic states.
    forces : PartialForces
        Validated partial forces for the same rows.
    loss : {"partial", "x", "z"}
    control : NeighbourForceMeans or None
        Control variate; None for the paper's plain estimator.

    Returns
    -------
    dict of torch.Tensor
        ``z`` (n_samples, d), ``b`` (n_samples, d), ``A`` (n_samples, d, d),
        ``c`` (n_samples,), and ``y`` (n_samples, d), the estimate of
        ``dz/dt = J f``; all float64.
    """
    parts = {key: [] for key in ("z", "y", "b", "A", "c")}
    for rows, z, jac in encoder.iter_jacobians(X, factored=True):
        jac = jac.to(device="cpu", dtype=torch.float64)
        index, f, w = (torch.from_numpy(a) for a in forces.observed_chunk(rows))
        J = jac.columns(index)  # (chunk, d, m): J at the computed coordinates
        h = None if control is None else control.chunk(rows)
        if h is None:
            r, u = f, 0.0
        else:
            h = torch.from_numpy(h)
            r, u = f - torch.gather(h, 1, index), jac.matvec(h)
        JWr = torch.einsum("bdm,bm->bd", J, w * r)
        y = u + JWr
        if loss == "z":
            b, c = y, torch.sum(y**2, dim=-1)
            A = torch.eye(y.shape[1], dtype=y.dtype).expand(len(y), -1, -1)
        else:
            G_inv = torch.linalg.inv(jac.gram())
            A = G_inv @ ((J * w[:, None, :]) @ J.transpose(1, 2)) @ G_inv
            b = torch.einsum("bij,bj->bi", G_inv, JWr)
            c = torch.sum(w * r**2, dim=-1)
            if h is not None:
                # Expand (g - u)^T A (g - u) - 2 (g - u)^T b into the form in g.
                Au = torch.einsum("bij,bj->bi", A, u)
                c = c + 2 * torch.sum(u * b, dim=-1) + torch.sum(u * Au, dim=-1)
                b = b + Au
        for key, value in zip(parts, (z.cpu().double(), y, b, A, c), strict=True):
            parts[key].append(value)
    return {key: torch.cat(value) for key, value in parts.items()}


def _linked_encoder(Z, name="Z"):
    encoder = getattr(Z, "encoder", None)
    if encoder is None:
        raise ValueError(
            f"{name} carries no encoder: pass Z = ClosureAutoencoder.transform(X) "
            "(or fit a Pipeline([('ae', ...), ('dyn', ...)]) on X), so that the "
            "encoder Jacobian at the same states is available"
        )
    return encoder, Z.source


class PartialForceDynamics(RegressorMixin, SkmacroNet):
    """Latent dynamics ``dz/dt = g_theta(z)`` trained from partial forces.

    ``fit(Z, F)`` takes latent coordinates from a fitted
    :class:`~skmacro.ClosureAutoencoder` (inside a ``Pipeline`` or straight
    from its ``transform``) and the microscopic forces, NaN (or not stored,
    if sparse) where they were not computed. The loss is mapped back to the
    microscopic coordinates, where partial forces give an unbiased estimate
    (Eq. 12-13). One pass over the data reduces each configuration to the
    statistics of :func:`partial_force_statistics`; epochs then cost O(d^2)
    per configuration, independent of N and of p.

    Parameters
    ----------
    latent_model : {"mlp", "onsager", "gfinn"} or torch.nn.Module class, default="mlp"
        Vector field on standardised latent coordinates; its hyper-parameters
        are set with ``module__<name>=...`` (e.g. ``module__hidden=(64, 64)``).
    loss : {"partial", "x", "z"}, default="partial"
        ``"partial"`` is L_x,p (Eq. 12; equals L_x with complete forces),
        ``"x"`` is L_x (Eq. 10; needs every force), ``"z"`` is L_z (Eq. 9;
        with partial forces, trained on their Horvitz-Thompson estimate of
        ``dz/dt``).
    p : float in (0, 1] or None, default=None
        Inclusion probability of each particle; None infers it from the
        observed fraction (exact for Algorithm 1).
    control_variate : {"neighbors"} or None, default="neighbors"
        Variance reduction beyond the paper: centre each configuration's
        partial forces on the mean force its coordinates had at the
        ``n_neighbors`` nearest other configurations (in a PCA of ``X``). The
        loss keeps the expectation of L_x,p (Eq. 13 still holds) with about
        5x less noise on Predator-Prey; None is the paper's plain estimator.
        Ignored when every force was computed.
    n_neighbors : int, default=50
        Neighbours averaged by the control variate.
    optimizer : torch optimizer class, default=torch.optim.Adam
    lr : float, default=5e-3
    max_epochs : int, default=200
    batch_size : int, default=512
    validation_fraction : float or None, default=0.1
        Fraction of configurations held out for ``valid_loss``; the best
        epoch on it is kept. 0 or None trains on everything. With
        ``fit(..., groups=trajectory_ids)`` whole trajectories are held out.
    patience : int or None, default=None
        Stop when the validation loss (the training loss without a split)
        has not improved for this many epochs; the best epoch is kept.
    train_split : callable or None, default=None
        A skorch split; overrides ``validation_fraction``.
    callbacks : list or None, default=None
    warm_start : bool, default=False
    verbose : int, default=0
        0 silent, 1 a progress bar, 2 a per-epoch table.
    device : {"cpu", "cuda", "auto"} or torch.device, default="cpu"
        "auto" picks CUDA when available (the attribute then holds the
        device chosen at fit).  A model fitted on CUDA unpickles on a
        CPU-only machine (onto the CPU, with a warning from skorch).
    random_state : int, RandomState or None, default=None
    **kwargs
        Further skorch parameters (``module__...``, ``optimizer__...``).

    Attributes
    ----------
    n_features_in_ : int
        Latent size d.
    n_observables_ : int
        Number d* of fixed observables of the encoder seen in ``fit``.
    p_ : float or None
        Inclusion probability used (None when ``inclusion_proba`` was given).
    module_ : ScaledVectorField
    history_ : skorch.History
    """

    _parameter_constraints = {
        **SkmacroNet._parameter_constraints,
        "latent_model": [StrOptions(set(LATENT_MODELS)), type],
        "loss": [StrOptions(set(LOSSES))],
        "p": [Interval(Real, 0, 1, closed="right"), None],
        "control_variate": [StrOptions({"neighbors"}), None],
        "n_neighbors": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(
        self,
        *,
        latent_model="mlp",
        loss="partial",
        p=None,
        control_variate="neighbors",
        n_neighbors=50,
        module=ScaledVectorField,
        criterion=QuadraticFormLoss,
        optimizer=torch.optim.Adam,
        lr=5e-3,
        max_epochs=200,
        batch_size=512,
        validation_fraction=0.1,
        patience=None,
        train_split=None,
        callbacks=None,
        warm_start=False,
        verbose=0,
        device="cpu",
        random_state=None,
        **kwargs,
    ):
        super().__init__(
            module=module,
            criterion=criterion,
            optimizer=optimizer,
            lr=lr,
            max_epochs=max_epochs,
            batch_size=batch_size,
            train_split=train_split,
            callbacks=callbacks,
            warm_start=warm_start,
            verbose=verbose,
            device=device,
            **kwargs,
        )
        self.latent_model = latent_model
        self.loss = loss
        self.p = p
        self.control_variate = control_variate
        self.n_neighbors = n_neighbors
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.random_state = random_state

    # -- skorch hooks -----------------------------------------------------
    def build_module(self):
        field = resolve_latent_model(self.latent_model)(
            self.n_features_in_, **self.get_params_for("module")
        )
        return self.module(field, self.n_features_in_)

    def infer(self, x, **fit_params):
        z = x["z"] if isinstance(x, dict) else x
        return self.module_(z.to(self.device))

    def get_loss(self, y_pred, y_true, X=None, training=False):
        return self.criterion_(
            y_pred, *(X[key].to(self.device) for key in ("b", "A", "c"))
        )

    # -- public API -------------------------------------------------------
    def _forces(self, Z, F, mask, inclusion_proba, p):
        encoder, X = _linked_encoder(Z)
        forces = PartialForces(F, X.shape[1], mask, inclusion_proba, p)
        if forces.n_samples != len(X):
            raise ValueError(
                f"Z has {len(X)} rows but F has {forces.n_samples}: they must "
                "describe the same configurations"
            )
        return encoder, X, forces

    def fit(self, Z, F, mask=None, inclusion_proba=None, **fit_params):
        """Learn ``g_theta`` from latent coordinates and partial forces.

        Parameters
        ----------
        Z : LatentArray of shape (n_samples, d)
            Output of a fitted ``ClosureAutoencoder.transform``.
        F : array-like or sparse matrix/array of shape (n_samples, N)
            Microscopic forces: NaN where not computed (dense) or stored
            entries only (sparse CSR; explicit zeros count as computed).
        mask : array-like of bool, shape (n_samples, n) or (n_samples, N), optional
            Computed particles/coordinates; inferred from ``F`` when absent.
        inclusion_proba : float or array-like, optional
            Per-particle inclusion probabilities, shape (n,), (N,),
            (n_samples, n) or (n_samples, N), for non-uniform sampling.
        **fit_params : dict
            ``groups`` for a group-aware ``train_split``.

        Returns
        -------
        self : PartialForceDynamics
        """
        reset = not (self.warm_start and self._is_trained())
        return self._fit(Z, F, mask, inclusion_proba, reset, **fit_params)

    def partial_fit(
        self, Z, F, mask=None, inclusion_proba=None, classes=None, **fit_params
    ):
        """Train ``max_epochs`` more epochs from the current parameters
        (initialising them on the first call); see :meth:`fit`. ``classes``
        is ignored (skorch's signature)."""
        reset = not self._is_trained()
        return self._fit(Z, F, mask, inclusion_proba, reset, **fit_params)

    def _fit(self, Z, F, mask, inclusion_proba, reset, **fit_params):
        check_choice("loss", self.loss, LOSSES)
        resolve_latent_model(self.latent_model)
        self._check_hyperparameters()
        encoder, X, forces = self._forces(Z, F, mask, inclusion_proba, self.p)
        if self.loss == "x" and not forces.is_complete():
            raise ValueError(
                "loss='x' (L_x, Eq. 10) needs the forces on every coordinate; "
                "use loss='partial' (L_x,p) for partial forces"
            )
        control = None
        if self.control_variate == "neighbors" and not forces.is_complete():
            control = NeighbourForceMeans(X, forces, self.n_neighbors, self._seeds()[2])
        stats = partial_force_statistics(encoder, X, forces, self.loss, control)
        if reset:
            self.n_features_in_ = stats["z"].shape[1]
            self.n_observables_ = encoder.n_observables_
            self.initialize()
            self._set_scales(stats["z"], stats["y"])
        elif stats["z"].shape[1] != self.n_features_in_:
            raise ValueError(
                f"Z has {stats['z'].shape[1]} features, but "
                f"{type(self).__name__} is expecting {self.n_features_in_} "
                "features as input (it was fitted on them)"
            )
        self.p_ = forces.p
        data = {key: stats[key].float() for key in ("z", "b", "A", "c")}
        return self._fit_tensors(data, **fit_params)

    def _set_scales(self, z, y):
        """Standardise z and pick the time unit from typical rates of change."""
        z_scale = z.std(dim=0).clamp_min(1e-12)
        y_scale = y.std(dim=0).clamp_min(1e-12)
        module = self.module_
        module.z_mean.copy_(z.mean(dim=0))
        module.z_scale.copy_(z_scale)
        module.time_scale.copy_(torch.exp(torch.mean(torch.log(z_scale / y_scale))))

    def predict(self, Z):
        """Latent velocities ``dz/dt = g_theta(z)``.

        Parameters
        ----------
        Z : array-like of shape (n_samples, d)

        Returns
        -------
        ndarray of shape (n_samples, d), float32
        """
        check_is_fitted(self, "module_")
        Z = check_states(Z, "Z", n_features=self.n_features_in_)
        self.module_.eval()
        with torch.no_grad():
            out = [
                self.module_(torch.as_tensor(Z[s : s + 65536], device=self.device))
                for s in range(0, len(Z), 65536)
            ]
        return torch.cat(out).cpu().numpy()

    def score(self, Z, F, mask=None, inclusion_proba=None, sample_weight=None):
        """p-aware macroscopic-velocity R^2 (see DESIGN.md).

        Compares ``g*_theta(z)``, the first d* outputs, with the
        Horvitz-Thompson estimate ``sum_I w_i phi*'_i(x) f_i`` of the
        observables' velocity ``dz*/dt``. The estimate's noise adds the same
        constant to every model's error, so the ranking of any two pipelines,
        whatever their encoders, is that of their true macroscopic errors.

        Parameters
        ----------
        Z : LatentArray of shape (n_samples, d)
        F : array-like or sparse matrix/array of shape (n_samples, N)
        mask, inclusion_proba : optional
            As in :meth:`fit`; ``p`` defaults to this model's ``p`` or the
            observed fraction of ``F``.
        sample_weight : array-like of shape (n_samples,), optional

        Returns
        -------
        float
            R^2 averaged uniformly over the d* observables (1 is perfect).
        """
        y, g = self._macro_velocities(Z, F, mask, inclusion_proba)
        return r2_score(y, g, sample_weight=sample_weight)

    def _macro_velocities(self, Z, F, mask=None, inclusion_proba=None):
        """Horvitz-Thompson estimate of ``dz*/dt`` and the model's ``g*``,
        each of shape (n_samples, d*)."""
        check_is_fitted(self, "module_")
        encoder, X, forces = self._forces(Z, F, mask, inclusion_proba, self.p)
        d_star = encoder.n_observables_
        if d_star == 0:
            raise ValueError(
                "scoring needs an encoder with fixed observables (d* >= 1); this "
                "encoder has none"
            )
        y_parts, z_parts = [], []
        for rows, z, jac in encoder.iter_jacobians(X, factored=True):
            index, f, w = (torch.from_numpy(a) for a in forces.observed_chunk(rows))
            J = jac.to(device="cpu", dtype=torch.float64).columns(index)
            y_parts.append(torch.einsum("bdm,bm->bd", J[:, :d_star], w * f).numpy())
            z_parts.append(z.cpu().numpy())
        g_star = self.predict(np.concatenate(z_parts))[:, :d_star]
        return np.concatenate(y_parts), g_star
