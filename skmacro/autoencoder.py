"""``ClosureAutoencoder``: latent coordinates around fixed observables
(paper Section 4.1, Eq. 5-7)."""

import copy
from numbers import Integral, Real

import numpy as np
import sklearn
import torch
from sklearn.base import TransformerMixin
from sklearn.utils._available_if import available_if
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data
from torch import nn

from . import _observables
from ._arrays import check_rows, n_rows, take_rows
from ._chunking import STATISTICS_BUDGET, evenly_spaced, index_chunks
from ._closure_pca import project_closure
from ._conditioning import (
    ConditioningWarning,
    median_condition_number,
    warn_if_ill_conditioned,
)
from ._net import SkmacroNet
from ._standardize import latent_moments
from ._validation import check_choice, check_states
from .encoders import LatentArray, latent_frame
from .nn.autoencoder import ClosureAutoencoderModule, condition_number
from .nn.closures import INPUT_SCALINGS, MLPClosure, batch_jacobian, is_feature_closure
from .nn.losses import ClosureAutoencoderLoss
from .nn.mlp import ACTIVATIONS

__all__ = ["ClosureAutoencoder", "ConditioningWarning"]

#: Adam's settings when ``optimizer=torch.optim.Adam`` and the user gives
#: none: the paper's reference code's.
ADAM_DEFAULTS = {"betas": (0.9, 0.95), "weight_decay": 1e-4}
#: Training states on which ``condition_number_`` is measured.
CONDITION_SAMPLE = 256
#: Parameters that configure the MLP closure only, and their defaults.
MLP_CLOSURE_PARAMS = {
    "hidden": (64, 64),
    "input_scaling": "global",
    "base_fan_in": 8192,
    "closure_pca": None,
}
#: The protocol a closure network must follow (see skmacro.nn.closures).
CLOSURE_METHODS = ("build", "check_n_features", "prepare", "target", "jacobian")


class ClosureAutoencoder(TransformerMixin, SkmacroNet, auto_wrap_output_keys=None):
    """Autoencoder whose first ``d*`` latent coordinates are fixed observables.

    The encoder is ``phi(x) = (phi*(x), phi_hat(x))``: ``phi*`` are the given
    observables, untouched by training, and ``phi_hat`` a closure network;
    the decoder ``psi`` is an MLP that reconstructs the closure's target
    (for the default MLP closure, the standardised state). Trained on
    ``L_AE = L_rec + lambda_cond * L_cond`` (Eq. 5-7), where ``L_cond``
    penalises the condition number of ``phi'(x) phi'(x)^T`` so that the
    pseudo-inverse in ``L_x`` is well behaved (Theorem 1). It satisfies the
    encoder protocol of :mod:`skmacro.encoders`.

    The validation rows are drawn first; the input and latent scales are
    then computed on the training rows only.

    Parameters
    ----------
    observables : callable or None, default=None
        Torch-differentiable ``(batch, n_features) -> (batch, d*)``, e.g. a
        system's ``observables`` method, acting row by row (each output row
        depends on its own input row only). Must be picklable (a module-level
        function or a bound method, not a lambda) for pickling and parallel
        search. None gives a plain autoencoder (``d* = 0``).
    observable_names : sequence of str or None, default=None
        Names of the observables (the first feature names out). None takes
        the ``observable_names`` of the system whose bound method
        ``observables`` is, else ``z*_0, z*_1, ...``.
    n_components : int or None, default=None
        Total latent size ``d >= d*``; None means ``d* + 2``.
    closure : "mlp", torch.nn.Module or callable, default="mlp"
        The closure network. ``"mlp"`` is an MLP on the standardised state
        (:class:`~skmacro.nn.MLPClosure`, configured by ``hidden``,
        ``input_scaling``, ``base_fan_in`` and ``closure_pca``), right for
        grids whose coordinates have a fixed meaning. A module following the
        closure protocol of :mod:`skmacro.nn.closures` (e.g.
        :class:`~skmacro.nn.ParticleSetClosure` for particle systems) is
        copied, never trained in place; a callable is called with no
        arguments to make one.
    lambda_cond : float, default=1e-6
        Weight of the condition-number loss (the paper's best value, Table 3).
    hidden : tuple of int, default=(64, 64)
        Hidden widths of the MLP closure (the decoder mirrors them).
    activation : str, default="softplus"
        Activation of the MLP closure and of the decoder; smooth, since the
        Jacobian is used.
    decoder_hidden : tuple of int or None, default=None
        Hidden widths of the decoder; None mirrors ``hidden`` for the MLP
        closure and is (64, 64) for another closure.
    cond_batch_size : int, default=32
        Rows of each mini-batch whose Jacobian enters ``L_cond`` (an unbiased
        estimate of its mean that bounds memory).
    input_scaling : {"global", "feature"}, default="global"
        How the MLP closure scales the centred inputs: one common scale (the
        root-mean-square of the features' standard deviations), which keeps
        their relative physical magnitudes, or each feature by its own
        standard deviation, so that fields of very different units weigh
        alike (it also magnifies features that barely vary).
    base_fan_in : int or None, default=8192
        The MLP closure's first layer learns at ``lr * min(1, base_fan_in /
        n_features)``, the other parameters at ``lr``: Adam moves each
        first-layer pre-activation by up to ~``lr * n_features`` per step, so
        with many more inputs than ``base_fan_in`` a full rate saturates the
        closure and its Jacobian turns rank-deficient. None trains every
        parameter at ``lr``; a rate given for ``closure.net.0.weight`` in
        ``optimizer__param_groups`` takes precedence.
    closure_pca : int, float or None, default=None
        After training, keep the MLP closure's first-layer weight only along
        the leading principal directions of the scaled training states: an
        int keeps that many, a float in (0, 1) as many as explain that
        fraction of the variance (as ``sklearn.decomposition.PCA``'s
        ``n_components``, but at least the number of closure coordinates);
        None keeps it all. Weight along directions in which the training
        states never vary hardly changes the latent coordinates on the data
        but enters the Jacobian, and so the noise of ``L_x,p``; removing it
        also changes ``(J J^T)^-1`` and raises ``condition_number_``, so
        compare with None on held-out trajectories. The directions are
        fitted on up to 1,024 evenly spaced training states.
    optimizer : torch optimizer class, default=torch.optim.Adam
        With ``torch.optim.Adam``, ``betas`` default to (0.9, 0.95) and
        ``weight_decay`` (an L2 penalty) to 1e-4, the paper's reference
        settings, instead of PyTorch's (0.9, 0.999) and 0;
        ``optimizer__betas=...`` or ``optimizer__weight_decay=...`` override
        them.
    lr : float, default=1e-3
        Initial learning rate; it decays along a cosine to ``lr / 100`` over
        the epochs of the fit.
    min_steps : int, default=1000
        Optimiser steps of a fit (when ``max_epochs`` is None): training runs
        the fewest whole epochs that make at least ``min_steps`` steps and at
        least ``min_epochs`` epochs, so that a small data set is not left
        under-trained (600 states make 3 steps per epoch).
    min_epochs : int, default=30
        Passes over the training rows of a fit (when ``max_epochs`` is None),
        at the least; data sets of more than about 9,000 training states
        train for exactly ``min_epochs``.
    max_epochs : int or None, default=None
        Train exactly this many epochs (fewer if ``patience`` stops the run),
        whatever ``min_steps`` and ``min_epochs``; None derives the epochs
        from them.
    batch_size : int, default=256
    validation_fraction : float or None, default=0.1
        Fraction of rows held out for ``valid_loss`` when
        ``train_split="auto"`` (the best epoch on it is kept); 0 or None
        trains on every row. With ``fit(X, groups=trajectory_ids)`` whole
        trajectories are held out.
    patience : int or None, default=None
        Stop when the validation loss (the training loss without a split)
        has not improved for this many epochs; the best epoch is kept.
    train_split : "auto", callable or None, default="auto"
        ``"auto"`` holds out ``validation_fraction`` of the rows; None trains
        on every row (skorch's meaning); a callable is a skorch split such as
        ``skorch.dataset.ValidSplit(GroupKFold(5))``, called with the rows
        and ``groups`` and returning two subsets of them.
    callbacks : list or None, default=None
        Extra skorch callbacks.
    warm_start : bool, default=False
        Continue training from the current parameters on ``fit``.
    verbose : int, default=0
        0 silent, 1 a progress bar, 2 a per-epoch table.
    device : {"cpu", "cuda", "auto"} or torch.device, default="cpu"
        "auto" picks CUDA when available, at every fit and on loading. A
        model fitted on CUDA unpickles on a CPU-only machine (onto the CPU,
        with a warning from skorch unless the device is "auto").
    random_state : int, RandomState or None, default=None
    **kwargs
        ``optimizer__...`` and ``callbacks__...`` parameters, as in skorch.

    Attributes
    ----------
    n_features_in_ : int
    n_observables_ : int
    n_components_ : int
    observable_names_ : list of str
    size_agnostic_ : bool
        Whether the closure also encodes states of another width (another
        number of particles).
    latent_mean_, latent_scale_ : ndarray of shape (d,)
        Mean and standard deviation of the latent coordinates on the
        training rows (the decoder's input standardisation);
        ``d = n_components_``.
    closure_explained_variance_ : float
        Fraction of the variance of the scaled training states along the
        directions the closure's first layer kept (1.0 without
        ``closure_pca``).
    closure_pca_shift_ : float
        How much that projection moved the closure coordinates on up to 256
        evenly spaced training states: the median over coordinates of the
        standard deviation of their change over their own (0.0 without
        ``closure_pca``; a warning above 1e-2).
    module_ : ClosureAutoencoderModule
    history_ : skorch.History
    best_epoch_ : int
    train_rows_, validation_rows_ : ndarray of int (validation: or None)
        The rows trained on and held out in the last fit.
    condition_number_ : float
        Median ``kappa(J J^T)`` of the fitted encoder over up to 256 evenly
        spaced training states, in float64. L_x and L_x,p weight latent
        errors by ``(J J^T)^-1``, so a large value (a
        :class:`ConditioningWarning` is issued above 1e3) means those losses
        will neglect some latent directions; raise ``lambda_cond`` or rescale
        the observables.

    Examples
    --------
    >>> import numpy as np
    >>> from skmacro import ClosureAutoencoder
    >>> from skmacro.systems import PredatorPrey
    >>> system = PredatorPrey()
    >>> X = system.simulate(system.sample_initial(4, random_state=0), 1.0, 0.01,
    ...                     stride=10).reshape(-1, system.n_features)
    >>> ae = ClosureAutoencoder(observables=system.observables, n_components=4,
    ...                         max_epochs=2, random_state=0).fit(X)
    >>> ae.transform(X).shape
    (44, 4)
    """

    _parameter_constraints = {
        **SkmacroNet.NET_CONSTRAINTS,
        "observables": [callable, None],
        "observable_names": ["array-like", None],
        "n_components": [Interval(Integral, 1, None, closed="left"), None],
        "closure": [StrOptions({"mlp"}), nn.Module, callable],
        "lambda_cond": [Interval(Real, 0, None, closed="left")],
        "hidden": [tuple, list],
        "activation": [StrOptions(set(ACTIVATIONS))],
        "decoder_hidden": [tuple, list, None],
        "cond_batch_size": [Interval(Integral, 1, None, closed="left")],
        "input_scaling": [StrOptions(set(INPUT_SCALINGS))],
        "base_fan_in": [Interval(Integral, 1, None, closed="left"), None],
        "closure_pca": [
            Interval(Integral, 1, None, closed="left"),
            Interval(Real, 0, 1, closed="neither"),
            None,
        ],
    }

    def __init__(
        self,
        observables=None,
        *,
        observable_names=None,
        n_components=None,
        closure="mlp",
        lambda_cond=1e-6,
        hidden=(64, 64),
        activation="softplus",
        decoder_hidden=None,
        cond_batch_size=32,
        input_scaling="global",
        base_fan_in=8192,
        closure_pca=None,
        optimizer=torch.optim.Adam,
        lr=1e-3,
        min_steps=1000,
        min_epochs=30,
        max_epochs=None,
        batch_size=256,
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
            module=ClosureAutoencoderModule,
            criterion=ClosureAutoencoderLoss,
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
        self.observables = observables
        self.observable_names = observable_names
        self.n_components = n_components
        self.closure = closure
        self.lambda_cond = lambda_cond
        self.hidden = hidden
        self.activation = activation
        self.decoder_hidden = decoder_hidden
        self.cond_batch_size = cond_batch_size
        self.input_scaling = input_scaling
        self.base_fan_in = base_fan_in
        self.closure_pca = closure_pca
        self.min_steps = min_steps
        self.min_epochs = min_epochs
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.random_state = random_state

    # A transformer: skorch's predict (the decoder's standardised output)
    # would only confuse; use transform / inverse_transform.
    predict = available_if(lambda self: False)(SkmacroNet.predict)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        # Computations run in float32 whatever the input precision.
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags

    def __getstate__(self):
        _observables.check_picklable(self.observables)
        return super().__getstate__()

    # -- skorch hooks -----------------------------------------------------
    def _check_settable_attr(self, name, attr):
        # skorch refuses torch modules as plain attributes; ``closure`` is a
        # template that build_module deep-copies, never trained in place.
        if name == "closure":
            return
        super()._check_settable_attr(name, attr)

    def build_module(self):
        closure = self._new_closure().build(
            self.n_features_in_, self.n_components_ - self.n_observables_
        )
        decoder_hidden = self.decoder_hidden
        if decoder_hidden is None:
            decoder_hidden = (
                tuple(self.hidden)[::-1] if self.closure == "mlp" else (64, 64)
            )
        return ClosureAutoencoderModule(
            observables=self.observables,
            n_observables=self.n_observables_,
            closure=closure,
            decoder_hidden=decoder_hidden,
            activation=self.activation,
        )

    def initialize_criterion(self):
        self.criterion_ = self.criterion(lambda_cond=self.lambda_cond)
        return self

    def get_params_for_optimizer(self, prefix, named_parameters):
        """skorch's parameter groups plus the closure's own groups (e.g. the
        MLP closure's fan-in-scaled first layer) for parameters the user's
        ``param_groups`` give no rate, and Adam's default settings
        (``optimizer``) where not given."""
        (groups,), kwargs = super().get_params_for_optimizer(prefix, named_parameters)
        if self.optimizer is torch.optim.Adam:
            for name, value in ADAM_DEFAULTS.items():
                kwargs.setdefault(name, value)
        extra = getattr(self.module_.closure, "parameter_groups", None)
        for own in extra(kwargs["lr"]) if extra is not None else []:
            wanted = {id(p) for p in own["params"]}
            moved = []
            for group in groups:
                if "lr" in group:
                    continue  # the user's rate takes precedence
                moved += [p for p in group["params"] if id(p) in wanted]
                group["params"] = [p for p in group["params"] if id(p) not in wanted]
            if moved:
                groups.append({**own, "params": moved})
        return ([group for group in groups if group["params"]],), kwargs

    def infer(self, x, **fit_params):
        x = x.to(self.device)
        if getattr(self, "_feature_fit", None) is not None:
            return self.module_.decode_target(self.module_.encode_features(x))
        return self.module_(x)

    def get_loss(self, y_pred, y_true, X=None, training=False):
        module = self.module_
        x = X.to(self.device)
        fit = getattr(self, "_feature_fit", None)
        if fit is not None:
            # Rows (phi*(x), s(x)) of a feature closure.
            target = module.closure.target_from_features(x[:, self.n_observables_ :])
            kappa = None
            if self.lambda_cond:
                kappa = condition_number(fit.gram(module, training))
            return self.criterion_(y_pred, target, kappa)
        kappa = None
        if self.lambda_cond:
            kappa = condition_number(module.jacobian(x[: self.cond_batch_size]).gram())
        return self.criterion_(y_pred, module.closure.target(x), kappa)

    # -- fitting ------------------------------------------------------------
    def fit(self, X, y=None, groups=None):
        """Train the autoencoder on microscopic states.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Microscopic states.
        y : ignored
            Accepted for ``Pipeline`` compatibility (the forces are for the
            dynamics step).
        groups : array-like of shape (n_samples,), optional
            Group labels (e.g. trajectory ids) for the validation split.

        Returns
        -------
        self : ClosureAutoencoder
        """
        self._fit(X, self._starts_afresh(), groups)
        return self

    def partial_fit(self, X, y=None, classes=None, groups=None):
        """Train one more budget (``max_epochs`` epochs, or at least
        ``min_steps`` steps and ``min_epochs`` epochs) from the current
        parameters, initialising them on the first call; see :meth:`fit`.
        ``classes`` is ignored (skorch's signature)."""
        self._fit(X, not self._is_trained(), groups)
        return self

    def _fit(self, X, reset, groups):
        """Fit on ``X``; return the checked states and, for a feature
        closure, the feature rows computed for the fit (else None)."""
        features = None
        self._check_hyperparameters()
        X = self._check_states(X, reset=reset)
        train, valid = self._split_rows(n_rows(X), groups)
        with self._resolved_device():
            if reset:
                self._set_dimensions(X)
                self.initialize()
            else:
                self._continue_training()
            if is_feature_closure(self.module_.closure):
                features = self._fit_on_features(X, train, valid, reset)
            else:
                if reset:
                    self.module_.closure.prepare(lambda: self._batches(X, train))
                    self._set_latent_scaling(X, train)
                self._train(X, train, valid)
            self.closure_explained_variance_, self.closure_pca_shift_ = 1.0, 0.0
            if self.closure_pca is not None and self.module_.closure.n_outputs:
                self.closure_explained_variance_, self.closure_pca_shift_ = (
                    project_closure(
                        self.module_.closure,
                        X,
                        train,
                        self.closure_pca,
                        lambda rows: self._encode(X, rows),
                    )
                )
        sample = evenly_spaced(train, CONDITION_SAMPLE)
        self.condition_number_ = median_condition_number(self, X, sample)
        warn_if_ill_conditioned(
            self.condition_number_,
            n_rows=len(sample),
            lambda_cond=self.lambda_cond,
            closure=self.module_.closure,
            n_features=self.n_features_in_,
            closure_pca=self.closure_pca,
        )
        return X, features

    def _check_hyperparameters(self):
        super()._check_hyperparameters()
        if self.closure != "mlp":
            changed = [
                name
                for name, default in MLP_CLOSURE_PARAMS.items()
                if getattr(self, name) != default
            ]
            if changed:
                raise ValueError(
                    f"{', '.join(changed)} configure the MLP closure only; with "
                    f"closure={self.closure!r} leave them at their defaults (set "
                    "the decoder's widths with decoder_hidden)"
                )

    def _new_closure(self):
        """A fresh closure network of the ``closure`` parameter."""
        if self.closure == "mlp":
            return MLPClosure(
                self.hidden, self.activation, self.input_scaling, self.base_fan_in
            )
        closure = (
            copy.deepcopy(self.closure)
            if isinstance(self.closure, nn.Module)
            else self.closure()
        )
        missing = [m for m in CLOSURE_METHODS if not hasattr(closure, m)]
        if not isinstance(closure, nn.Module) or missing:
            raise TypeError(
                f"closure must be 'mlp', a closure network (torch.nn.Module with "
                f"{', '.join(CLOSURE_METHODS)}; see skmacro.nn.closures) or a "
                f"callable returning one; got {type(closure).__name__}"
                + (f" lacking {', '.join(missing)}" if missing else "")
            )
        return closure

    def _set_dimensions(self, X):
        self.n_observables_ = 0
        if self.observables is not None:
            self.n_observables_ = _observables.count_observables(
                self.observables, take_rows(X, slice(0, 2))
            )
        self.observable_names_ = _observables.observable_names(
            self.observables, self.n_observables_, self.observable_names
        )
        d = self.n_components
        if d is None:
            d = self.n_observables_ + 2
        if d < max(self.n_observables_, 1):
            raise ValueError(
                f"n_components must be an integer >= the number of observables "
                f"({self.n_observables_}) and >= 1, got {self.n_components!r}"
            )
        self.n_components_ = int(d)
        n_closure = self.n_components_ - self.n_observables_
        if isinstance(self.closure_pca, Integral) and self.closure_pca < n_closure:
            raise ValueError(
                f"closure_pca={self.closure_pca} keeps fewer principal directions "
                f"than the {n_closure} closure coordinates (n_components - d*): "
                "the encoder's Jacobian would be rank-deficient. Keep at least "
                f"{n_closure}."
            )

    def _fit_on_features(self, X, train, valid, reset):
        """Train a feature closure's head and the decoder on the features
        ``s(x)`` computed once per state (with the observables beside them),
        so that an epoch costs the same whatever the number of particles.

        The condition-number loss uses the parameter-free Gram matrices of
        ``[J_o; F]`` (``F = ds/dx``) at up to ``4 * cond_batch_size`` evenly
        spaced training states, computed once; each training step draws
        ``cond_batch_size`` of them at random (validation uses the first).
        Returns the feature rows of every state of ``X``.
        """
        closure, d = self.module_.closure, self.n_observables_
        Y = self._feature_rows(X)
        if reset:
            closure.prepare_features(Y[torch.as_tensor(train), d:])
            with torch.no_grad():
                z = self.module_.encode_features(
                    Y[torch.as_tensor(np.sort(train))].to(self._module_device)
                )
            self._store_latent_scaling(z.cpu())
        fit = None
        if self.lambda_cond:
            pool = evenly_spaced(train, 4 * self.cond_batch_size)
            fit = _FeatureFit(
                self._feature_grams(X, pool),
                Y[torch.as_tensor(pool), d:],
                self.cond_batch_size,
                seed=self._seeds()[1] + 1,
            )
        self._feature_fit = fit or _FeatureFit(None, None, 0, 0)
        try:
            self._train(Y, train, valid)
        finally:
            del self._feature_fit
        return Y

    def _closure_floats(self, width):
        """Floats of work the closure's Jacobian holds per state of ``width``."""
        extra = getattr(self.module_.closure, "floats_per_row", None)
        return extra(width) if extra is not None else width

    def _feature_rows(self, X):
        """``(phi*(x), s(x))`` of every row of ``X`` for a feature closure,
        a float32 CPU tensor (n_samples, d* + P)."""
        module, device = self.module_, self._module_device
        per_row = X.shape[1] + self._closure_floats(X.shape[1])
        parts = []
        with torch.no_grad():
            for chunk in index_chunks(slice(0, n_rows(X)), per_row):
                x = torch.as_tensor(take_rows(X, chunk), device=device)
                s = module.closure.features(x).to(torch.float32)
                if self.n_observables_:
                    s = torch.cat([module.observables(x).to(s), s], dim=1)
                parts.append(s.cpu())
        return torch.cat(parts)

    def _feature_grams(self, X, rows):
        """Gram matrices of ``[J_o; F]`` at the rows ``rows`` of ``X``,
        (len(rows), d* + P, d* + P), float32 on the CPU (see
        :meth:`_fit_on_features`)."""
        module, device = self.module_, self._module_device
        d = self.n_observables_
        per_row = (d + 8) * X.shape[1] + self._closure_floats(X.shape[1])
        parts = []
        with torch.no_grad():
            for chunk in index_chunks(rows, per_row):
                x = torch.as_tensor(take_rows(X, chunk), device=device)
                F = module.closure.feature_jacobian(x)
                G = F.gram().to(torch.float64)
                if d:
                    J_o = batch_jacobian(module.observables, x).to(torch.float64)
                    G_so = F.matvec(J_o.transpose(1, 2)).to(torch.float64)
                    top = torch.cat(
                        [J_o @ J_o.transpose(1, 2), G_so.transpose(1, 2)], 2
                    )
                    G = torch.cat([top, torch.cat([G_so, G], dim=2)], dim=1)
                parts.append(G.to(torch.float32).cpu())
        return torch.cat(parts)

    def _set_latent_scaling(self, X, rows):
        """The decoder's input standardisation, from the training rows."""
        self._store_latent_scaling(self._encode(X, np.sort(rows)))

    def _store_latent_scaling(self, z):
        """Set the decoder's input standardisation from latent rows ``z``."""
        mean, scale = latent_moments(z)
        self.module_.z_mean.copy_(mean)
        self.module_.z_scale.copy_(scale)
        self.latent_mean_, self.latent_scale_ = mean.numpy(), scale.numpy()

    # -- reading states in chunks ----------------------------------------------
    def _chunks(self, rows, floats_per_row=None):
        """Chunks of ``rows`` (a slice with a stop, or an int array) within
        the memory budget for ``floats_per_row`` floats of work per row."""
        return index_chunks(rows, floats_per_row or self.n_features_in_)

    def _batches(self, X, rows):
        # Small chunks: column statistics make float64 temporaries of them.
        for chunk in index_chunks(np.sort(rows), X.shape[1], STATISTICS_BUDGET):
            yield torch.from_numpy(take_rows(X, chunk))

    def _encode(self, X, rows=None):
        """Latent coordinates of the rows of ``X`` (all by default), a CPU
        tensor."""
        device = self._module_device
        rows = slice(0, n_rows(X)) if rows is None else rows
        with torch.no_grad():
            parts = [
                self.module_.encode(torch.as_tensor(take_rows(X, r), device=device))
                for r in index_chunks(rows, X.shape[1], STATISTICS_BUDGET)
            ]
        return torch.cat(parts).cpu()

    def _check_states(self, X, reset=False):
        """Validate states without reading them (values are checked as they
        are read): feature count and names for a fixed-width closure, any
        width the closure encodes for a size-agnostic one."""
        checked = check_rows(X)
        if reset or not self.size_agnostic_:
            # The caller's X: a DataFrame's column names are checked too.
            validate_data(self, X, reset=reset, skip_check_array=True)
        else:
            self.module_.closure.check_n_features(checked.shape[1])
        return checked

    def _check_width(self, X):
        """The width of 2-D ``X``, checked against what the encoder encodes."""
        if len(X.shape) != 2:
            raise ValueError(f"X must be 2-D (n_samples, n_features), got {X.shape}")
        width = X.shape[1]
        if self.size_agnostic_:
            self.module_.closure.check_n_features(width)
        elif width != self.n_features_in_:
            raise ValueError(
                f"X has {width} features, but {type(self).__name__} is expecting "
                f"{self.n_features_in_} features as input"
            )
        return width

    @property
    def size_agnostic_(self):
        check_is_fitted(self, "module_")
        return bool(getattr(self.module_.closure, "size_agnostic", False))

    # -- the encoder protocol ------------------------------------------------
    def iter_jacobians(self, X, rows=None):
        """Yield ``(rows, Z, J)`` over chunks of ``X``, never holding more
        than a few million floats of Jacobian at once.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        rows : slice, ndarray of int or None, default=None
            The rows to visit (None: all, in order).

        Yields
        ------
        rows : slice or ndarray of int
            The chunk's rows of ``X``.
        Z : torch.Tensor of shape (chunk, d)
        J : EncoderJacobian
            The chunk's Jacobians ``phi'(x)`` in structured form (products
            with ``J``, its Gram matrix and selected columns without forming
            the closure's ``N`` columns); see :mod:`skmacro.encoders`.
        """
        check_is_fitted(self, "module_")
        X = check_rows(X)
        width = self._check_width(X)
        device = self._module_device
        # Parameter-only factors of the closure's Jacobian, formed once.
        closure = self.module_.closure
        frozen = None
        if closure.n_outputs and hasattr(closure, "frozen"):
            frozen = closure.frozen()
        # The observables' dense rows plus room for the caller's per-row work
        # of a few N-vectors (forces, weights, control variate).
        per_row = (self.n_observables_ + 8) * width + (
            self._closure_floats(width) if closure.n_outputs else 0
        )
        selection = slice(0, n_rows(X)) if rows is None else rows
        for chunk in self._chunks(selection, per_row):
            x = torch.as_tensor(take_rows(X, chunk), device=device)
            with torch.no_grad():
                jacobian = self.module_.jacobian(x, frozen).detach()
                z = self.module_.encode(x, jacobian)
            yield chunk, z, jacobian

    def transform(self, X):
        """Encode microscopic states.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        Z : LatentArray of shape (n_samples, n_components)
            ``Z[:, :d*]`` are the observables, the rest the closure. With
            ``set_output(transform="pandas")`` a ``DataFrame`` that carries
            the same link to the encoder.
        """
        check_is_fitted(self, "module_")
        X_checked = self._check_states(X)
        return self._latent_output(self._encode(X_checked).numpy(), X, X_checked)

    def _latent_output(self, Z, X, X_checked):
        """``Z`` in the container :meth:`set_output` chose, linked to the
        encoder and the states."""
        if self._output_container() == "pandas":
            return latent_frame(
                Z,
                self,
                X_checked,
                self.get_feature_names_out(),
                index=getattr(X, "index", None),
            )
        return LatentArray(Z, encoder=self, source=X_checked)

    def fit_transform(self, X, y=None, groups=None):
        """Fit, then encode ``X``; see :meth:`fit` and :meth:`transform`.
        With a feature closure the features computed for the fit are
        encoded, not computed a second time."""
        X_checked, features = self._fit(X, self._starts_afresh(), groups)
        if features is None:
            return self.transform(X)
        device = self._module_device
        with torch.no_grad():
            Z = torch.cat(
                [
                    self.module_.encode_features(features[rows].to(device)).cpu()
                    for rows in index_chunks(slice(0, len(features)), features.shape[1])
                ]
            )
        return self._latent_output(Z.numpy(), X, X_checked)

    def set_output(self, *, transform=None):
        """Choose the container of :meth:`transform`'s output.

        Parameters
        ----------
        transform : {"default", "pandas"} or None, default=None
            ``"default"``: a :class:`~skmacro.LatentArray`; ``"pandas"``: a
            ``DataFrame`` with the feature names as columns, which keeps the
            link to the encoder (so a ``Pipeline`` with pandas output still
            fits its dynamics step); None leaves the choice unchanged.

        Returns
        -------
        self : ClosureAutoencoder
        """
        if transform is None:
            return self
        check_choice("transform", transform, ("default", "pandas"))
        self._sklearn_output_config = {"transform": transform}
        return self

    def _output_container(self):
        config = getattr(self, "_sklearn_output_config", {}).get("transform")
        return config or sklearn.get_config()["transform_output"]

    def inverse_transform(self, Z):
        """Decode latent coordinates into the closure's reconstruction target.

        Parameters
        ----------
        Z : array-like of shape (n_samples, n_components)

        Returns
        -------
        ndarray of shape (n_samples, target_width)
            For the MLP closure, the reconstructed states (n_features
            columns); for another closure, its reconstruction target in the
            user's units (see the closure's documentation).
        """
        check_is_fitted(self, "module_")
        Z = check_states(Z, "Z", n_features=self.n_components_)
        module = self.module_
        with torch.no_grad():
            t = module.decode_target(torch.as_tensor(Z, device=self._module_device))
            return module.closure.target_to_user(t).cpu().numpy()

    def jacobian(self, X):
        """Encoder Jacobians ``phi'(x)`` as a dense array.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        J : ndarray of shape (n_samples, n_components, n_features)
            Memory grows as ``n_samples * d * N``: for large systems iterate
            with :meth:`iter_jacobians` instead.
        """
        return np.concatenate(
            [J.dense().cpu().numpy() for _, _, J in self.iter_jacobians(X)]
        )

    def get_feature_names_out(self, input_features=None):
        """Names of the latent coordinates: the observables', then
        ``closure_0, ...``.

        Returns
        -------
        ndarray of str of shape (n_components,)
        """
        check_is_fitted(self, "module_")
        closure = [
            f"closure_{i}" for i in range(self.n_components_ - self.n_observables_)
        ]
        return np.asarray([*self.observable_names_, *closure], dtype=object)


class _FeatureFit:
    """What training a feature closure on its features needs beyond the
    rows: the parameter-free Gram matrices ``G`` of ``[J_o; F]`` and the
    features ``s`` of a pool of training states (None without the
    condition-number loss), and a generator drawing ``m`` of them per
    training step (validation uses the first ``m``)."""

    def __init__(self, grams, features, m, seed):
        self.grams, self.features, self.m = grams, features, m
        self.generator = torch.Generator().manual_seed(int(seed))

    def gram(self, module, training):
        """The encoder's ``J J^T`` (m, d, d) at pool states, differentiable in
        the closure head's parameters."""
        n = len(self.grams)
        m = min(self.m, n)
        if training:
            index = torch.randperm(n, generator=self.generator)[:m]
        else:
            index = torch.arange(m)
        device = module.z_mean.device
        return module.gram_from_features(
            self.grams[index].to(device), self.features[index].to(device)
        )
