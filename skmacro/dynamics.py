"""``PartialForceDynamics``: a latent vector field learned from partial
microscopic forces (paper Section 4.2)."""

import copy
import warnings
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import RegressorMixin
from sklearn.metrics import r2_score
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from ._arrays import n_rows
from ._chunking import LATENT_ROWS
from ._net import SkmacroNet
from ._standardize import latent_moments, time_scale
from ._validation import check_choice, check_states
from .encoders import linked_encoder
from .forces import PartialForces
from .nn.ensemble import VectorFieldEnsemble
from .nn.losses import QuadraticFormLoss
from .nn.scaling import ScaledVectorField
from .nn.vector_fields import LATENT_MODELS, resolve_latent_model
from .statistics import (
    ForceModelControl,
    NeighbourForceMeans,
    observable_velocities,
    partial_force_statistics,
)

__all__ = ["PartialForceDynamics"]

LOSSES = ("partial", "x", "z")


def _renamed_latent_model_params(params):
    """``module__...`` (the former prefix of the latent model's parameters)
    renamed ``latent_model__...``, with a ``FutureWarning``."""
    old = [key for key in params if key.startswith("module__")]
    if old:
        warnings.warn(
            f"{', '.join(sorted(old))}: the latent model's parameters are now "
            "set with the prefix latent_model__ (e.g. latent_model__hidden); "
            "module__ will stop working in the next release",
            FutureWarning,
            stacklevel=3,
        )
    return {
        ("latent_model__" + key[len("module__") :] if key in old else key): value
        for key, value in params.items()
    }


def _member_std(members):
    """Standard deviation over the first axis (the members), with Bessel's
    correction; zeros for a single member."""
    if len(members) == 1:
        return torch.zeros_like(members[0])
    return members.std(dim=0)


class PartialForceDynamics(RegressorMixin, SkmacroNet):
    """Latent dynamics ``dz/dt = g_theta(z)`` trained from partial forces.

    ``fit(Z, F)`` takes latent coordinates from a fitted encoder (the output
    of :meth:`ClosureAutoencoder.transform <skmacro.ClosureAutoencoder.transform>`,
    inside a ``Pipeline`` or not) and the microscopic forces, NaN (or not
    stored, if sparse) where they were not computed. The loss is mapped back
    to the microscopic coordinates, where partial forces give an unbiased
    estimate (Eq. 12-13). One pass over the data reduces each configuration
    to the statistics of :func:`skmacro.statistics.partial_force_statistics`;
    training then costs O(d^2) per configuration and step, independent of N
    and of p.

    The validation rows are drawn first: the control variate, the latent
    scales and the training rows' statistics never read them.

    Training is budgeted in optimiser steps as well as epochs, so that a
    small data set gets as many updates as a large one and a large one
    still sees each configuration often (``min_steps``, ``min_epochs``):
    the learning rate decays along a cosine over the budget, the validation
    loss is evaluated every 25 steps or every epoch, whichever is longer,
    and the best evaluation's parameters are kept.

    With ``n_members > 1`` the model is an ensemble: that many latent
    networks, initialised with different seeds and each shuffling the rows
    its own way, are trained together on the same statistics (one pass over
    the data). :meth:`predict` returns their mean field (and, with
    ``return_std=True``, its spread across members); :func:`skmacro.simulate`
    integrates every member's own field, so a structured member (OnsagerNet,
    GFINN) keeps its guarantees along its rollout, and returns the mean
    trajectory (and on request the members' trajectories and their spread).

    Parameters
    ----------
    latent_model : {"mlp", "onsager", "gfinn"} or torch.nn.Module class, default="mlp"
        Vector field on standardised latent coordinates; its hyper-parameters
        are set with ``latent_model__<name>=...`` (e.g.
        ``latent_model__hidden=(64, 64)``; the former prefix ``module__``
        still works, with a ``FutureWarning``).
    loss : {"partial", "x", "z"}, default="partial"
        ``"partial"`` is L_x,p (Eq. 12; equals L_x with complete forces),
        ``"x"`` is L_x (Eq. 10; needs every force), ``"z"`` is L_z (Eq. 9;
        with partial forces, trained on their Horvitz-Thompson estimate of
        ``dz/dt``).
    p : float in (0, 1] or None, default=None
        Inclusion probability of each particle; None infers it from the
        observed fraction of ``F`` (exact for Algorithm 1, which computes the
        same number of particles in every configuration).
    control_variate : {"neighbors"}, force model or None, default="neighbors"
        Variance reduction beyond the paper: centre each configuration's
        partial forces on a guess ``h`` of all of them, and add back the
        exact ``J h``. ``"neighbors"``: the mean force each coordinate had
        at the ``n_neighbors`` nearest training configurations (in a PCA of
        ``X``). A force model (an object with ``predict(X) -> (n, N)``, and
        optionally ``fit(X, F)``, such as
        :class:`skmacro.force_models.PairForceModel`): its guess at every
        coordinate, fitted on the training rows' computed forces in two
        folds so that no configuration's guess saw its own forces (see
        :class:`skmacro.statistics.ForceModelControl`); the closer the
        model is to the true forces, the closer L_x,p comes to L_x with
        every force. The loss keeps the expectation of L_x,p (Eq. 13 still
        holds) with less noise; None is the paper's plain estimator.
        Ignored when every force was computed.
    n_neighbors : int, default=50
        Neighbours averaged by the control variate.
    n_members : int, default=3
        Latent networks trained together (an ensemble); 1 is a single model.
        The training cost grows in proportion; the statistics pass is shared.
    latent_noise : float, default=0.0
        Standard deviation of Gaussian noise added to the latent inputs of
        the vector field at every training step, in units of each latent
        coordinate's spread (``latent_scale_``); the loss's targets are left
        as they are, and validation sees clean inputs. Training with input
        noise penalises the field's variation across the data (it is
        equivalent to a Tikhonov regulariser to first order, Bishop 1995),
        so a rollout that leaves the training states meets a field that
        keeps close to its values on them; for a linear field the optimum
        is unchanged. It steadies rollouts of systems whose states
        concentrate near a thin set, such as the Allen-Cahn free energy
        (0.05 there: see the Allen-Cahn section of the results page).
    optimizer : torch optimizer class, default=torch.optim.Adam
    lr : float, default=5e-3
        Initial learning rate; it decays along a cosine to ``lr / 100`` over
        the steps of the fit.
    min_steps : int, default=3000
        Optimiser steps of a fit (when ``max_epochs`` is None): training runs
        the fewest whole epochs that make at least ``min_steps`` steps and at
        least ``min_epochs`` epochs, so a small data set gets as many updates
        as a large one.
    min_epochs : int, default=50
        Passes over the training rows of a fit (when ``max_epochs`` is None),
        at the least: a data set so large that ``min_steps`` would visit each
        configuration fewer times trains longer.
    max_epochs : int or None, default=None
        Train exactly this many epochs (fewer if ``patience`` stops the run),
        whatever ``min_steps`` and ``min_epochs``; None derives the epochs
        from them.
    batch_size : int, default=512
        Configurations per step (-1: all of them).
    validation_fraction : float or None, default=0.1
        Fraction of configurations held out for ``valid_loss`` when
        ``train_split="auto"``; each member keeps the parameters of its best
        evaluation on it. 0 or None trains on every configuration (the
        training loss then picks the kept parameters). With ``fit(...,
        groups=trajectory_ids)`` whole trajectories are held out.
    patience : int or None, default=None
        Stop when no member's validation loss (training loss without a
        split) has improved for this many evaluations (history rows); the
        best parameters are kept.
    train_split : "auto", callable or None, default="auto"
        ``"auto"`` holds out ``validation_fraction`` of the rows; None trains
        on every row (skorch's meaning); a callable is a skorch split such as
        ``skorch.dataset.ValidSplit(GroupKFold(5))``.
    callbacks : list or None, default=None
        Extra skorch callbacks. They are notified at the start and end of
        training, around every evaluation (``on_epoch_begin`` and
        ``on_epoch_end`` frame one history row, which may span several
        epochs) and, if they implement them, around every step
        (``on_batch_begin``, ``on_batch_end``).
    warm_start : bool, default=False
    verbose : int, default=0
        0 silent; 1 progress bars over the statistics pass (its
        configurations, or a dask array's blocks under dask's local
        schedulers) and over training; 2 the
        statistics pass's bar and a table with one line per evaluation.
    device : {"cpu", "cuda", "auto"} or torch.device, default="cpu"
        "auto" picks CUDA when available, at every fit and on loading. A
        model fitted on CUDA unpickles on a CPU-only machine (onto the CPU).
    random_state : int, RandomState or None, default=None
    **kwargs
        ``latent_model__...``, ``optimizer__...`` and ``callbacks__...``
        parameters.

    Attributes
    ----------
    n_features_in_ : int
        Latent size d.
    n_members_ : int
        Members of the fitted model.
    p_ : float or None
        Inclusion probability used (None when ``inclusion_proba`` was given).
    latent_mean_, latent_scale_ : ndarray of shape (d,)
        Mean and standard deviation of the training rows' latent coordinates
        (the latent model works on ``(z - latent_mean_) / latent_scale_``).
    module_ : ScaledVectorField
        Around a :class:`~skmacro.nn.VectorFieldEnsemble` of ``n_members``
        latent networks (one for a single model).
    history_ : skorch.History
        One row per evaluation: ``epoch`` (epochs completed), ``step``
        (optimiser steps of this fit), ``train_loss`` (the mean over the
        row's steps), ``valid_loss`` (with a validation split), ``lr`` and
        ``dur`` (seconds); losses are means over the members.
    best_epoch_ : int or ndarray of int of shape (n_members,)
        Epoch whose parameters were kept (one per member for an ensemble).
    train_rows_, validation_rows_ : ndarray of int (validation: or None)
        The rows trained on and held out in the last fit.
    """

    _parameter_constraints = {
        **SkmacroNet.NET_CONSTRAINTS,
        "latent_model": [StrOptions(set(LATENT_MODELS)), type],
        "loss": [StrOptions(set(LOSSES))],
        "p": [Interval(Real, 0, 1, closed="right"), None],
        "control_variate": [StrOptions({"neighbors"}), HasMethods(["predict"]), None],
        "n_neighbors": [Interval(Integral, 1, None, closed="left")],
        "n_members": [Interval(Integral, 1, None, closed="left")],
        "latent_noise": [Interval(Real, 0, None, closed="left")],
    }
    accepted_prefixes = ("optimizer", "callbacks", "latent_model")
    prefixes_ = ["callbacks", "latent_model"]

    def __init__(
        self,
        *,
        latent_model="mlp",
        loss="partial",
        p=None,
        control_variate="neighbors",
        n_neighbors=50,
        n_members=3,
        latent_noise=0.0,
        optimizer=torch.optim.Adam,
        lr=5e-3,
        min_steps=3000,
        min_epochs=50,
        max_epochs=None,
        batch_size=512,
        validation_fraction=0.1,
        patience=None,
        train_split="auto",
        callbacks=None,
        warm_start=False,
        verbose=0,
        device="cpu",
        random_state=None,
        **kwargs,
    ):
        super().__init__(
            module=ScaledVectorField,
            criterion=QuadraticFormLoss,
            optimizer=optimizer,
            lr=lr,
            max_epochs=max_epochs,
            batch_size=batch_size,
            train_split=train_split,
            callbacks=callbacks,
            warm_start=warm_start,
            verbose=verbose,
            device=device,
            **_renamed_latent_model_params(kwargs),
        )
        self.latent_model = latent_model
        self.loss = loss
        self.p = p
        self.control_variate = control_variate
        self.n_neighbors = n_neighbors
        self.n_members = n_members
        self.latent_noise = latent_noise
        self.min_steps = min_steps
        self.min_epochs = min_epochs
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.random_state = random_state

    def set_params(self, **params):
        params = _renamed_latent_model_params(params)
        # The latent model's parameters are read when the next fit builds the
        # module; skorch would try to re-initialise a fitted net's component
        # of that name, which it does not know.
        latent = {key for key in params if key.startswith("latent_model__")}
        for key in latent:
            setattr(self, key, params.pop(key))
        return super().set_params(**params) if params else self

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # y is the forces F: one column per microscopic coordinate, NaN (or
        # not stored, in a sparse F) where a force was not computed. Z is
        # dense and finite.
        tags.target_tags.required = True
        tags.target_tags.single_output = False
        tags.target_tags.multi_output = True
        tags.input_tags.sparse = False
        tags.input_tags.allow_nan = False
        return tags

    # -- skorch hooks -----------------------------------------------------
    def build_module(self):
        latent_model = resolve_latent_model(self.latent_model)
        params = self.get_params_for("latent_model")
        # Members are drawn one after the other from the seeded generator:
        # the first is the network a single model would have.
        members = [
            latent_model(self.n_features_in_, **params) for _ in range(self.n_members)
        ]
        return self.module(VectorFieldEnsemble(members), self.n_features_in_)

    def get_default_callbacks(self):
        # Steps, evaluation, the kept parameters and early stopping are the
        # training loop's own (SkmacroNet._train_in_steps).
        return self._display_callbacks()

    def infer(self, x, **fit_params):
        z = x["z"] if isinstance(x, dict) else x
        return self.module_(z.to(self.device))

    def _training_batch(self, X, generator):
        """Add ``latent_noise`` Gaussian noise, in standardised units, to the
        latent inputs of a training batch (the statistics ``b``, ``A``, ``c``
        are left as they are)."""
        if not self.latent_noise:
            return X
        z = X["z"]
        noise = torch.randn(z.shape, generator=generator, dtype=z.dtype)
        scale = self.latent_noise * self.module_.z_scale
        return {**X, "z": z + noise.to(z.device) * scale}

    def get_loss(self, y_pred, y_true, X=None, training=False):
        """Each member's loss, shape (n_members,)."""
        return self.criterion_(
            y_pred, *(X[key].to(self.device) for key in ("b", "A", "c"))
        )

    def _member_modules(self):
        ensemble = self.module_.field
        return [ensemble.member(m) for m in range(len(ensemble))]

    # -- fitting ------------------------------------------------------------
    def fit(self, Z, F, mask=None, inclusion_proba=None, groups=None):
        """Learn ``g_theta`` from latent coordinates and partial forces.

        Parameters
        ----------
        Z : LatentArray or DataFrame of shape (n_samples, d)
            Output of a fitted encoder's ``transform``.
        F : array-like or sparse matrix/array of shape (n_samples, N)
            Microscopic forces: NaN where not computed (dense) or stored
            entries only (sparse CSR; explicit zeros count as computed).
        mask : array-like of bool, shape (n_samples, n) or (n_samples, N), optional
            Computed particles/coordinates; inferred from ``F`` when absent.
        inclusion_proba : float or array-like, optional
            Per-particle inclusion probabilities, shape (n,), (N,),
            (n_samples, n) or (n_samples, N), for non-uniform sampling.
        groups : array-like of shape (n_samples,), optional
            Group labels (e.g. trajectory ids) for the validation split.

        Returns
        -------
        self : PartialForceDynamics
        """
        return self._fit(Z, F, mask, inclusion_proba, self._starts_afresh(), groups)

    def partial_fit(
        self, Z, F, mask=None, inclusion_proba=None, classes=None, groups=None
    ):
        """Train one more budget (``max_epochs`` epochs, or at least
        ``min_steps`` steps and ``min_epochs`` epochs) from the current
        parameters, with a fresh
        learning-rate schedule (initialising them on the first call); see
        :meth:`fit`. ``classes`` is ignored (skorch's signature)."""
        return self._fit(Z, F, mask, inclusion_proba, not self._is_trained(), groups)

    def _linked_forces(self, Z, F, mask, inclusion_proba):
        encoder, X = linked_encoder(Z)
        forces = PartialForces(F, X.shape[1], mask, inclusion_proba, self.p)
        if forces.n_samples != n_rows(X):
            raise ValueError(
                f"Z has {n_rows(X)} rows but F has {forces.n_samples}: they must "
                "describe the same configurations"
            )
        return encoder, X, forces

    def _fit(self, Z, F, mask, inclusion_proba, reset, groups):
        check_choice("loss", self.loss, LOSSES)
        resolve_latent_model(self.latent_model)
        self._check_hyperparameters()
        encoder, X, forces = self._linked_forces(Z, F, mask, inclusion_proba)
        if self.loss == "x" and not forces.is_complete():
            raise ValueError(
                "loss='x' (L_x, Eq. 10) needs the forces on every coordinate; "
                "use loss='partial' (L_x,p) for partial forces"
            )
        train, valid = self._split_rows(n_rows(X), groups)
        control, seed = None, self._seeds()[2]
        if self.control_variate is not None and not forces.is_complete():
            if isinstance(self.control_variate, str):  # "neighbors"
                control = NeighbourForceMeans(
                    X, forces, self.n_neighbors, rows=train, random_state=seed
                )
            else:
                control = ForceModelControl(
                    self.control_variate, X, forces, rows=train, random_state=seed
                )
        stats = partial_force_statistics(
            encoder, X, forces, self.loss, control, progress=self.verbose > 0
        )
        d = stats["z"].shape[1]
        with self._resolved_device():
            if reset:
                self.n_features_in_ = d
                self.initialize()
                self._set_scales(stats["z"][train], stats["y"][train])
            elif d != self.n_features_in_:
                raise ValueError(
                    f"Z has {d} features, but {type(self).__name__} is expecting "
                    f"{self.n_features_in_} features as input (it was fitted on "
                    "them)"
                )
            elif self.n_members != self.n_members_:
                raise ValueError(
                    f"n_members={self.n_members} but the model was fitted with "
                    f"{self.n_members_} members: continuing its training needs "
                    "the same number (or fit with warm_start=False)"
                )
            else:
                self._continue_training()
            self.n_members_ = len(self.module_.field)
            self.p_ = forces.p
            device = self._module_device
            data = {key: stats[key].float().to(device) for key in ("z", "b", "A", "c")}
            # A continued fit shuffles (and perturbs) its rows anew.
            seed = self._seeds()[1] + len(self.history)
            return self._train_in_steps(data, train, valid, seed=seed)

    def _set_scales(self, z, y):
        """Standardise z and pick the time unit from the training rows."""
        mean, scale = latent_moments(z)
        module = self.module_
        module.z_mean.copy_(mean)
        module.z_scale.copy_(scale)
        module.time_scale.copy_(time_scale(scale, y))
        self.latent_mean_ = mean.cpu().numpy().astype(np.float32)
        self.latent_scale_ = scale.cpu().numpy().astype(np.float32)

    # -- prediction and scoring ------------------------------------------------
    def vector_field(self, z):
        """The mean field ``g(z)`` of the members, on torch tensors.

        Parameters
        ----------
        z : torch.Tensor of shape (batch, d)
            On :attr:`device_`.

        Returns
        -------
        torch.Tensor of shape (batch, d)
        """
        return self._inference_module()(z).mean(dim=0)

    def member_vector_fields(self, z):
        """Every member's own field on its own states, on torch tensors (for
        rollouts, :func:`skmacro.simulate`).

        Parameters
        ----------
        z : torch.Tensor of shape (n_members_, batch, d) or (batch, d)
            On :attr:`device_`; ``z[m]`` is given to member ``m`` (a 2-D
            ``z`` to every member).

        Returns
        -------
        torch.Tensor of shape (n_members_, batch, d)
        """
        return self._inference_module()(z)

    def keep_members(self, members):
        """A copy of this fitted ensemble with only some of its members.

        The copy predicts and rolls out with the kept members' fields
        exactly as they were; this model is left as it is. Its
        ``n_members`` and ``n_members_`` are the number kept and its
        ``best_epoch_`` theirs; ``history_`` is the whole ensemble's (its
        losses are means over every member trained). Continuing the copy's
        training (``partial_fit``, ``warm_start``) starts a fresh optimiser.
        See :func:`skmacro.metrics.select_members` for choosing them.

        Parameters
        ----------
        members : sequence of int
            Indices of the members to keep, each in ``[0, n_members_)``, in
            the order the copy will hold them; an index may appear once.

        Returns
        -------
        PartialForceDynamics
        """
        check_is_fitted(self, "module_")
        keep = np.asarray(members)
        if (
            keep.ndim != 1
            or not len(keep)
            or not np.issubdtype(keep.dtype, np.integer)
            or keep.min() < 0
            or keep.max() >= self.n_members_
            or len(np.unique(keep)) != len(keep)
        ):
            raise ValueError(
                "members must be a non-empty sequence of distinct member indices in "
                f"[0, {self.n_members_}), got {members!r}"
            )
        kept = copy.deepcopy(self)
        field = kept.module_.field
        kept.module_.field = VectorFieldEnsemble([field.member(int(m)) for m in keep])
        kept.n_members = kept.n_members_ = len(keep)
        if np.ndim(self.best_epoch_):
            best = np.asarray(self.best_epoch_)[keep]
            kept.best_epoch_ = best[0] if len(keep) == 1 else best
        with kept._resolved_device():
            kept.initialize_optimizer()
        return kept

    def _inference_module(self):
        """``module_`` in evaluation mode. A rollout evaluates the field
        thousands of times, and ``Module.eval()`` walks every submodule, so
        it is called only when training left the module in training mode."""
        if self.module_.training:
            self.module_.eval()
        return self.module_

    def predict(self, Z, return_std=False):
        """Latent velocities ``dz/dt``: the mean of the members' fields.

        Parameters
        ----------
        Z : array-like of shape (n_samples, d)
        return_std : bool, default=False
            Also return the members' standard deviation around the mean
            (with Bessel's correction; zeros for a single model).

        Returns
        -------
        mean : ndarray of shape (n_samples, d), float32
        std : ndarray of shape (n_samples, d), float32
            Only with ``return_std=True``.
        """
        check_is_fitted(self, "module_")
        Z = check_states(Z, "Z", n_features=self.n_features_in_)
        device = self._module_device
        means, stds = [], []
        with torch.no_grad():
            for s in range(0, len(Z), LATENT_ROWS):
                # A read-only view (pandas output) is copied: torch warns
                # about tensors over memory it may not write.
                rows = np.require(Z[s : s + LATENT_ROWS], requirements="W")
                z = torch.as_tensor(rows, device=device)
                members = self.member_vector_fields(z)
                means.append(members.mean(dim=0).cpu())
                if return_std:
                    stds.append(_member_std(members).cpu())
        mean = torch.cat(means).numpy()
        if return_std:
            return mean, torch.cat(stds).numpy()
        return mean

    def observable_velocities(self, Z, F, mask=None, inclusion_proba=None):
        """The observables' velocity estimated from the forces, and the model's.

        Parameters
        ----------
        Z : LatentArray or DataFrame of shape (n_samples, d)
        F : array-like or sparse matrix/array of shape (n_samples, N)
        mask, inclusion_proba : optional
            As in :meth:`fit`; ``p`` defaults to this model's ``p`` or the
            observed fraction of ``F``.

        Returns
        -------
        y : ndarray of shape (n_samples, d*)
            Horvitz-Thompson estimate ``sum_I w_i phi*'_i(x) f_i`` of
            ``dz*/dt`` (see :func:`skmacro.statistics.observable_velocities`).
        g : ndarray of shape (n_samples, d*)
            The first d* outputs of ``g_theta(z)``.
        """
        check_is_fitted(self, "module_")
        encoder, X, forces = self._linked_forces(Z, F, mask, inclusion_proba)
        y, z = observable_velocities(encoder, X, forces)
        return y, self.predict(z)[:, : encoder.n_observables_]

    def score(self, Z, F, mask=None, inclusion_proba=None, sample_weight=None):
        """p-aware macroscopic-velocity R^2.

        Compares ``g*_theta(z)``, the first d* outputs, with the
        Horvitz-Thompson estimate ``sum_I w_i phi*'_i(x) f_i`` of the
        observables' velocity ``dz*/dt``. The estimate's noise adds the same
        constant to every model's error, so the ranking of any two pipelines,
        whatever their encoders, is that of their true macroscopic errors.

        Parameters
        ----------
        Z : LatentArray or DataFrame of shape (n_samples, d)
        F : array-like or sparse matrix/array of shape (n_samples, N)
        mask, inclusion_proba : optional
            As in :meth:`fit`.
        sample_weight : array-like of shape (n_samples,), optional

        Returns
        -------
        float
            R^2 averaged uniformly over the d* observables (1 is perfect).
        """
        y, g = self.observable_velocities(Z, F, mask, inclusion_proba)
        return r2_score(y, g, sample_weight=sample_weight)
