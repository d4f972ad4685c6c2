"""``ClosureAutoencoder``: latent coordinates around fixed observables
(paper Section 4.1, Eq. 5-7)."""

import pickle
import warnings
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import TransformerMixin
from sklearn.utils._available_if import available_if
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted, validate_data

from ._chunking import row_chunks
from ._net import SkmacroNet
from ._validation import check_states
from .nn.autoencoder import (
    ClosureAutoencoderLoss,
    ClosureAutoencoderModule,
    condition_number,
)
from .nn.mlp import ACTIVATIONS

#: Adam's settings when ``optimizer=torch.optim.Adam`` and the user gives
#: none: the paper's reference code's, which train a less noisy closure than
#: PyTorch's (0.9, 0.999) and no decay (docs/method.md, "Adam's settings").
ADAM_DEFAULTS = {"betas": (0.9, 0.95), "weight_decay": 1e-4}
#: Training states on which ``condition_number_`` is measured.
_CONDITION_SAMPLE = 256
#: Median kappa(J J^T) above which fitting warns. The paper's Predator-Prey
#: encoder sits near 20; with feature-wise input scaling a 800-atom
#: Lennard-Jones encoder at kappa ~ 6e4 (lambda_cond = 1e-6) gave 10x worse
#: dynamics than at ~400 (1e-4).
_CONDITION_WARN = 1e3
#: Beyond this kappa J J^T is singular to float64 precision (~1e16 for a
#: closure that collapsed): some rows of J are linearly dependent.
_RANK_DEFICIENT = 1e12
#: Training states (evenly spaced) on which the principal directions of
#: ``closure_pca`` are fitted: their Gram matrix stays cheap at N = 300,000.
_PCA_SAMPLE = 1024
#: ``closure_pca_shift_`` above which the projection warns: the closure then
#: differs on the data from the one the decoder was trained with.
_PCA_SHIFT_WARN = 1e-2


def _evenly_spaced_rows(X, n):
    """A copy of up to ``n`` evenly spaced rows of ``X``, first and last
    included."""
    return X[np.linspace(0, len(X) - 1, min(len(X), n)).astype(int)]


def _leading_directions(sample, n_components, n_min):
    """Leading principal directions of the rows of ``sample`` (centred in
    place).

    ``n_components`` is a count, or a fraction of the variance (the fewest
    directions that exceed it, as ``sklearn.decomposition.PCA``); at least
    ``n_min`` are kept. With fewer rows m than features N the directions
    come from the m x m Gram matrix of the centred rows (float64, in column
    blocks): at m = 1,024 and N = 307,200 that took 29 s on 2 cores, a full
    SVD (``PCA(svd_solver="full")``) 173 s.

    Returns
    -------
    V : ndarray of shape (n_kept, N), float32, orthonormal rows
    explained : float
        Fraction of the sample's variance along them.
    """
    sample -= sample.mean(axis=0)
    m, n = sample.shape
    # Column blocks whose float64 copy stays within the chunk budget.
    blocks = row_chunks(n, m)
    if n <= m:  # the N x N covariance
        variance, vectors = np.linalg.eigh(sample.T.astype(np.float64) @ sample)
    else:
        variance, vectors = np.linalg.eigh(
            sum(sample[:, b].astype(np.float64) @ sample[:, b].T for b in blocks)
        )
    variance, vectors = variance[::-1].clip(min=0), vectors[:, ::-1]
    explained = np.cumsum(variance) / max(variance.sum(), np.finfo(float).tiny)
    if isinstance(n_components, Integral):
        n_kept = n_components
    else:
        n_kept = np.searchsorted(explained, n_components, side="right") + 1
    n_kept = int(min(max(n_kept, n_min), len(variance), n))
    if n <= m:
        V = vectors[:, :n_kept].T
    else:
        # Rows of the sample combined by the Gram eigenvectors, then made
        # orthonormal (directions of tiny variance come out inexact).
        U = vectors[:, :n_kept]
        V = np.concatenate([U.T @ sample[:, b] for b in blocks], axis=1)
        V = np.linalg.qr(V.T)[0].T
    return V.astype(np.float32), float(explained[n_kept - 1])


class ConditioningWarning(UserWarning):
    """The fitted encoder's Jacobian is ill-conditioned (see
    ``ClosureAutoencoder.condition_number_``)."""


class LatentArray(np.ndarray):
    """Latent coordinates that remember the encoder and the states they came
    from, so that :class:`~skmacro.PartialForceDynamics` can compute the
    encoder Jacobian at the same rows (this is how the encoder reaches the
    dynamics inside a ``Pipeline``).

    Row selections (``Z[rows]``) keep the link; any other derived array is a
    plain ``ndarray``.

    Attributes
    ----------
    encoder : ClosureAutoencoder
    source : ndarray of shape (n_samples, n_features)
    """

    def __new__(cls, Z, encoder, source):
        obj = np.asarray(Z).view(cls)
        obj.encoder = encoder
        obj.source = source
        return obj

    def __array_finalize__(self, obj):
        self.encoder = None
        self.source = None

    def __array_wrap__(self, array, context=None, return_scalar=False):
        # Arithmetic results are new data, not encoder outputs.
        out = super().__array_wrap__(array, context, return_scalar)
        return out.view(np.ndarray) if isinstance(out, np.ndarray) else out

    def __getitem__(self, key):
        out = super().__getitem__(key)
        if not isinstance(out, LatentArray):
            return out
        rows, *cols = key if isinstance(key, tuple) else (key,)
        whole_rows = out.ndim == 2 and out.shape[1] == self.shape[1]
        if self.source is None or not whole_rows or any(c != slice(None) for c in cols):
            return out.view(np.ndarray)
        out.encoder = self.encoder
        out.source = self.source[rows]
        return out

    def __reduce__(self):
        # Pickle as a plain array: the encoder link is a convenience for a
        # live pipeline, not data.
        return np.asarray(self).__reduce__()


class ClosureAutoencoder(TransformerMixin, SkmacroNet):
    """Autoencoder whose first ``d*`` latent coordinates are fixed observables.

    The encoder is ``phi(x) = (phi*(x), phi_hat(x))``: ``phi*`` are the given
    observables, untouched by training, and ``phi_hat`` an MLP closure; the
    decoder ``psi`` is an MLP. Trained on ``L_AE = L_rec + lambda_cond *
    L_cond`` (Eq. 5-7), where ``L_cond`` penalises the condition number of
    ``phi'(x) phi'(x)^T`` so that the pseudo-inverse in ``L_x`` is well
    behaved (Theorem 1). Inputs are centred feature-wise and scaled as
    ``input_scaling`` says; ``L_rec`` is measured in those units.

    Parameters
    ----------
    observables : callable or None, default=None
        Torch-differentiable ``(batch, n_features) -> (batch, d*)``, e.g. a
        system's ``observables`` method, acting row by row (each output row
        depends on its own input row only). Must be picklable (a module-level
        function or a bound method, not a lambda) for pickling and parallel
        search. None gives a plain autoencoder (``d* = 0``).
    n_components : int or None, default=None
        Total latent size ``d >= d*``; None means ``d* + 2``.
    lambda_cond : float, default=1e-6
        Weight of the condition-number loss (the paper's best value, Table 3).
    hidden : tuple of int, default=(64, 64)
        Hidden widths of the closure encoder (the decoder mirrors them).
    activation : str, default="softplus"
        Activation of both networks; smooth, since the Jacobian is used.
    cond_batch_size : int, default=32
        Rows of each mini-batch whose Jacobian enters ``L_cond`` (an unbiased
        estimate of its mean that bounds memory at ``cond_batch_size * d * N``).
    input_scaling : {"global", "feature"}, default="global"
        How the centred inputs are scaled inside the networks. ``"global"``
        divides every feature by one common scale (the root-mean-square of
        the features' standard deviations), which keeps their relative
        physical magnitudes: a coordinate that barely moves in the data stays
        small for the closure and in ``L_rec``. ``"feature"`` divides each
        feature by its own standard deviation, so that fields of very
        different units weigh alike; it also magnifies features that barely
        vary (e.g. positions of trajectories that share their initial
        configuration), and closures built on them can make latent rollouts
        drift (docs/method.md, "Input scaling").
    base_fan_in : int or None, default=8192
        The closure's first layer learns at ``lr * min(1, base_fan_in /
        n_features)``, the other parameters at ``lr``. Adam moves each
        first-layer pre-activation by up to ~``lr * n_features`` per step, so
        with many more inputs than ``base_fan_in`` a full rate saturates the
        closure in the first epoch and its Jacobian turns rank-deficient
        (docs/method.md, "Wide inputs"). None trains every parameter at
        ``lr``; a rate given for ``closure.0.weight`` in
        ``optimizer__param_groups`` takes precedence.
    closure_pca : int, float or None, default=None
        After training, keep the closure's first-layer weight only along the
        leading principal directions of the scaled training states: an int
        keeps that many, a float in (0, 1) as many as explain that fraction
        of the variance (as ``sklearn.decomposition.PCA``'s
        ``n_components``, but at least the number of closure coordinates);
        None keeps it all. Weight along directions in which the training
        states never vary hardly changes the latent coordinates on the
        data, but it is part of the Jacobian, so in ``L_x,p`` it picks up
        the partial forces' noise there (docs/method.md, "Closure on
        principal directions"). The directions are fitted on up to 1,024
        evenly spaced training states. Removing the random weight raises
        ``condition_number_`` (10x on an 800-atom Lennard-Jones encoder,
        where ``closure_pca=200`` lowered the mean error on T of ten repeats
        by 23% with the neighbour control variate and by 43% without; 40x
        at 51,200 atoms, where it made it 4.6x worse). It also changes the
        ``(J J^T)^-1`` metric of ``L_x,p``, and on an encoder whose targets
        were not noisy (the paper's recipe, 800 atoms) it made rollouts 7x
        worse: compare with None on held-out trajectories.
    optimizer : torch optimizer class, default=torch.optim.Adam
        With ``torch.optim.Adam``, ``betas`` default to (0.9, 0.95) and
        ``weight_decay`` (an L2 penalty) to 1e-4, the paper's reference
        settings, instead of PyTorch's (0.9, 0.999) and 0: on the paper's
        800-atom Lennard-Jones data, with ``lambda_cond=1e-6``, they lowered
        the mean error on T of ten repeats fourfold (docs/method.md, "Adam's
        settings"). ``optimizer__betas=...`` or
        ``optimizer__weight_decay=...`` override them.
    lr : float, default=1e-3
    max_epochs : int, default=30
    batch_size : int, default=256
    validation_fraction : float or None, default=0.1
        Fraction of rows held out for ``valid_loss`` (the best epoch on it is
        kept); 0 or None trains on everything. Ignored if ``train_split`` is
        given. With ``fit(X, groups=trajectory_ids)`` whole trajectories are
        held out.
    patience : int or None, default=None
        Stop when the validation loss (the training loss without a split)
        has not improved for this many epochs; the best epoch is kept.
    train_split : callable or None, default=None
        A skorch split (e.g. ``skorch.dataset.ValidSplit(GroupKFold(5))``).
    callbacks : list or None, default=None
        Extra skorch callbacks.
    warm_start : bool, default=False
        Continue training from the current parameters on ``fit``.
    verbose : int, default=0
        0 silent, 1 a progress bar, 2 a per-epoch table.
    device : {"cpu", "cuda", "auto"} or torch.device, default="cpu"
        "auto" picks CUDA when available (the attribute then holds the
        device chosen at fit).  A model fitted on CUDA unpickles on a
        CPU-only machine (onto the CPU, with a warning from skorch).
    random_state : int, RandomState or None, default=None
    **kwargs
        Further skorch parameters (``optimizer__weight_decay=...``, ...).

    Attributes
    ----------
    n_features_in_ : int
    n_observables_ : int
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
    condition_number_ : float
        Median ``kappa(J J^T)`` of the fitted encoder over up to 256 evenly
        spaced training states, in float64 (float32 eigenvalues cannot
        resolve a kappa beyond ~1e7). L_x and L_x,p weight latent errors by
        ``(J J^T)^-1``, so a large value (a :class:`ConditioningWarning` is
        issued above 1e3) means those losses will neglect some latent
        directions; raise ``lambda_cond`` or rescale the observables.

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
        **SkmacroNet._parameter_constraints,
        "observables": [callable, None],
        "n_components": [Interval(Integral, 1, None, closed="left"), None],
        "lambda_cond": [Interval(Real, 0, None, closed="left")],
        "hidden": [tuple, list],
        "activation": [StrOptions(set(ACTIVATIONS))],
        "cond_batch_size": [Interval(Integral, 1, None, closed="left")],
        "input_scaling": [StrOptions({"global", "feature"})],
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
        n_components=None,
        lambda_cond=1e-6,
        hidden=(64, 64),
        activation="softplus",
        cond_batch_size=32,
        input_scaling="global",
        base_fan_in=8192,
        closure_pca=None,
        module=ClosureAutoencoderModule,
        criterion=ClosureAutoencoderLoss,
        optimizer=torch.optim.Adam,
        lr=1e-3,
        max_epochs=30,
        batch_size=256,
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
        self.observables = observables
        self.n_components = n_components
        self.lambda_cond = lambda_cond
        self.hidden = hidden
        self.activation = activation
        self.cond_batch_size = cond_batch_size
        self.input_scaling = input_scaling
        self.base_fan_in = base_fan_in
        self.closure_pca = closure_pca
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
        try:
            pickle.dumps(self.observables)
        except (pickle.PicklingError, AttributeError, TypeError) as exc:
            raise pickle.PicklingError(
                f"observables={self.observables!r} cannot be pickled ({exc}). "
                "Lambdas and functions defined inside other functions cannot be "
                "pickled (nor sent to GridSearchCV(n_jobs>1) workers): define it "
                "with `def` at module level, or pass a system's bound method "
                "such as `PredatorPrey().observables`."
            ) from exc
        return super().__getstate__()

    # -- skorch hooks -----------------------------------------------------
    def build_module(self):
        return self.module(
            observables=self.observables,
            n_features=self.n_features_in_,
            n_observables=self.n_observables_,
            n_components=self.n_components_,
            hidden=self.hidden,
            activation=self.activation,
            **self.get_params_for("module"),
        )

    def initialize_criterion(self):
        self.criterion_ = self.criterion(
            lambda_cond=self.lambda_cond, **self.get_params_for("criterion")
        )
        return self

    def get_params_for_optimizer(self, prefix, named_parameters):
        """skorch's parameter groups, with the closure's first-layer weight
        in a group of its own at the fan-in-scaled rate (``base_fan_in``)
        unless the user's ``param_groups`` already give it a rate, and
        Adam's default settings (``optimizer``) where not given."""
        (groups,), kwargs = super().get_params_for_optimizer(prefix, named_parameters)
        if self.optimizer is torch.optim.Adam:
            for name, value in ADAM_DEFAULTS.items():
                kwargs.setdefault(name, value)
        closure = self.module_.closure
        wide = self.base_fan_in is not None and self.n_features_in_ > self.base_fan_in
        if closure is None or not wide:
            return (groups,), kwargs
        weight = closure[0].weight
        for group in groups:
            if "lr" not in group and any(p is weight for p in group["params"]):
                group["params"] = [p for p in group["params"] if p is not weight]
                rate = kwargs["lr"] * self.base_fan_in / self.n_features_in_
                groups.append({"params": [weight], "lr": rate})
                break
        return ([group for group in groups if group["params"]],), kwargs

    def infer(self, x, **fit_params):
        return self.module_(x.to(self.device))

    def get_loss(self, y_pred, y_true, X=None, training=False):
        module = self.module_
        x = X.to(self.device)
        x_std = (x - module.x_mean) / module.x_scale
        kappa = None
        if self.lambda_cond:
            kappa = condition_number(module.gram(x[: self.cond_batch_size]))
        return self.criterion_(y_pred, x_std, kappa)

    # -- public API -------------------------------------------------------
    def fit(self, X, y=None, **fit_params):
        """Train the autoencoder on microscopic states.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Microscopic states.
        y : ignored
            Accepted for ``Pipeline`` compatibility (the forces are for the
            dynamics step).
        **fit_params : dict
            ``groups`` for a group-aware ``train_split``.

        Returns
        -------
        self : ClosureAutoencoder
        """
        return self._fit(X, not (self.warm_start and self._is_trained()), **fit_params)

    def partial_fit(self, X, y=None, classes=None, **fit_params):
        """Train ``max_epochs`` more epochs from the current parameters
        (initialising them on the first call); see :meth:`fit`. ``classes``
        is ignored (skorch's signature)."""
        return self._fit(X, not self._is_trained(), **fit_params)

    def _fit(self, X, reset, **fit_params):
        if self.observables is not None and not callable(self.observables):
            raise TypeError(
                "observables must be a callable (batch, n_features) -> "
                f"(batch, d*) on torch tensors, got {type(self.observables).__name__}"
            )
        self._check_hyperparameters()
        if reset:
            X = validate_data(self, X, dtype=np.float32)
            self._set_dimensions(X)
            self._check_closure_pca()
            self.initialize()
            self._set_scales(X)
        else:
            X = validate_data(self, X, dtype=np.float32, reset=False)
        self._fit_tensors(torch.as_tensor(X), **fit_params)
        self._project_closure(X)
        self._check_conditioning(X)
        return self

    def _project_closure(self, X):
        """Project the closure's first-layer weight on the leading principal
        directions of the scaled states ``X`` (``closure_pca``); set
        ``closure_explained_variance_`` and ``closure_pca_shift_``, and warn
        when the closure moved on the data."""
        self.closure_explained_variance_, self.closure_pca_shift_ = 1.0, 0.0
        closure = self.module_.closure
        if self.closure_pca is None or closure is None:
            return
        module = self.module_
        mean, scale = module.x_mean.cpu().numpy(), module.x_scale.cpu().numpy()
        if isinstance(self.closure_pca, Integral) and self.closure_pca >= len(mean):
            return  # every direction: nothing to project
        sample = _evenly_spaced_rows(X, _PCA_SAMPLE)
        sample -= mean  # a copy of the rows: scaled in place
        sample /= scale
        n_closure = self.n_components_ - self.n_observables_
        V, explained = _leading_directions(sample, self.closure_pca, n_closure)
        V = torch.as_tensor(V, device=self.device)
        n_kept = len(V)
        check = _evenly_spaced_rows(X, _CONDITION_SAMPLE)
        closure_rows = slice(self.n_observables_, None)
        before = self._encode(check)[:, closure_rows]
        with torch.no_grad():
            weight = closure[0].weight
            weight.copy_((weight @ V.T) @ V)
        shift = (self._encode(check)[:, closure_rows] - before).std(dim=0)
        spread = before.std(dim=0)
        self.closure_explained_variance_ = explained
        self.closure_pca_shift_ = float(
            np.median((shift / spread.clamp_min(1e-30)).cpu().numpy())
        )
        if self.closure_pca_shift_ > _PCA_SHIFT_WARN:
            warnings.warn(
                f"closure_pca={self.closure_pca!r} moved the closure coordinates "
                "on the training states by a median "
                f"{self.closure_pca_shift_:.2g} of their spread: the states vary "
                f"along more than the {n_kept} directions kept "
                f"({self.closure_explained_variance_:.6g} of the variance). "
                "Keep more directions (or closure_pca=None).",
                UserWarning,
                stacklevel=3,
            )

    def _check_conditioning(self, X):
        """Set ``condition_number_`` and warn when it is large."""
        sample = _evenly_spaced_rows(X, _CONDITION_SAMPLE)
        per_row = self.n_features_in_ * max(self.n_observables_, 1)
        with torch.no_grad():
            kappa = torch.cat(
                [
                    condition_number(
                        self.module_.jacobian_factors(
                            torch.as_tensor(sample[r], device=self.device)
                        )
                        .to(torch.float64)
                        .gram()
                    ).cpu()
                    for r in row_chunks(len(sample), per_row)
                ]
            )
        self.condition_number_ = float(kappa.median())
        if self.condition_number_ <= _CONDITION_WARN:
            return
        closure = self.module_.closure
        if self.condition_number_ <= _RANK_DEFICIENT:
            advice = (
                f"Increase lambda_cond (now {self.lambda_cond:g}; try 10-100x), "
                "or express the observables in units whose gradients are "
                "comparable with the closure variables'."
            )
        elif closure is None:
            advice = (
                "J is rank-deficient: the observables' gradients are linearly "
                "dependent; drop the redundant observables."
            )
        else:
            n = self.n_features_in_
            rate = (
                "at lr"
                if self.base_fan_in is None
                else f"at lr * min(1, base_fan_in / {n})"
            )
            smaller = min(n, self.base_fan_in or n) // 4
            advice = (
                "J is rank-deficient: the closure's outputs became dependent. "
                "Adam moves each of the closure's first-layer pre-activations by "
                f"up to ~lr * n_features per step; that layer learns {rate}, "
                f"base_fan_in={self.base_fan_in}: a smaller base_fan_in (e.g. "
                f"{smaller}) keeps it from saturating (docs/method.md, 'Wide inputs')."
            )
        if self.closure_pca is not None and closure is not None:
            advice += (
                f" closure_pca={self.closure_pca!r} removed the closure's weight "
                "off the data, which raises kappa: compare with closure_pca=None."
            )
        warnings.warn(
            "the fitted encoder's Jacobian J is ill-conditioned: median "
            f"kappa(J J^T) = {self.condition_number_:.3g} over {len(sample)} "
            f"training states (warning above {_CONDITION_WARN:g}). The L_x "
            "and L_x,p losses weight latent errors by (J J^T)^-1, so "
            "dynamics trained on this encoder can neglect some latent "
            f"directions. {advice}",
            ConditioningWarning,
            stacklevel=3,
        )

    def _set_dimensions(self, X):
        self.n_observables_ = 0
        if self.observables is not None:
            probe = self.observables(torch.as_tensor(X[:2]))
            if probe.ndim != 2 or probe.shape[0] != min(2, len(X)):
                raise ValueError(
                    "observables must map (batch, n_features) to (batch, d*), got "
                    f"output of shape {tuple(probe.shape)}"
                )
            self.n_observables_ = probe.shape[1]
        d = self.n_components
        if d is None:
            d = self.n_observables_ + 2
        if not isinstance(d, (int, np.integer)) or d < max(self.n_observables_, 1):
            raise ValueError(
                f"n_components must be an integer >= the number of observables "
                f"({self.n_observables_}) and >= 1, got {self.n_components!r}"
            )
        self.n_components_ = int(d)

    def _check_closure_pca(self):
        n_closure = self.n_components_ - self.n_observables_
        if isinstance(self.closure_pca, Integral) and self.closure_pca < n_closure:
            raise ValueError(
                f"closure_pca={self.closure_pca} keeps fewer principal directions "
                f"than the {n_closure} closure coordinates (n_components - d*): "
                "the encoder's Jacobian would be rank-deficient. Keep at least "
                f"{n_closure}."
            )

    def _set_scales(self, X):
        module = self.module_
        # Column statistics chunk by chunk: no temporary as large as X.
        rows = row_chunks(len(X), self.n_features_in_)
        mean = sum(X[r].sum(axis=0, dtype=np.float64) for r in rows) / len(X)
        var = sum(((X[r] - mean) ** 2).sum(axis=0) for r in rows) / len(X)
        scale = np.sqrt(var)
        if self.input_scaling == "global":
            scale = np.full_like(scale, np.sqrt(np.mean(var)))
        # Constant features carry nothing; a unit scale avoids dividing by 0.
        scale[scale < 1e-12 * max(1.0, float(np.abs(mean).max()))] = 1.0
        module.x_mean.copy_(torch.as_tensor(mean))
        module.x_scale.copy_(torch.as_tensor(scale))
        with torch.no_grad():
            z = self._encode(X)
        z_scale = z.std(dim=0)
        z_scale[z_scale == 0] = 1.0
        module.z_mean.copy_(z.mean(dim=0))
        module.z_scale.copy_(z_scale)

    def _encode(self, X):
        # Chunks whose standardised copy fills the whole budget (64 MiB):
        # glibc maps blocks that large afresh and unmaps them when freed.
        # Eight times smaller ones came from its heap, which fragmented and
        # kept up to 3.5 GiB more resident after encoding 5,000 x 307,200
        # states.
        rows = row_chunks(len(X), self.n_features_in_)
        with torch.no_grad():
            parts = [
                self.module_.encode(torch.as_tensor(X[r], device=self.device))
                for r in rows
            ]
        return torch.cat(parts).cpu()

    def iter_jacobians(self, X, factored=False):
        """Yield ``(rows, Z, J)`` over chunks of ``X``, never holding more
        than a few million floats of Jacobian at once.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        factored : bool, default=False
            Yield each chunk's Jacobians as a
            :class:`~skmacro.nn.autoencoder.FactoredJacobian` (products with
            ``J``, its Gram matrix and selected columns without forming the
            closure's ``N`` columns; far cheaper for large N) instead of a
            dense tensor.

        Yields
        ------
        rows : slice
        Z : torch.Tensor of shape (chunk, d)
        J : torch.Tensor of shape (chunk, d, n_features), or FactoredJacobian
        """
        check_is_fitted(self, "module_")
        X = validate_data(self, X, dtype=np.float32, reset=False)
        N = self.n_features_in_
        # Factored: the observables' dense rows plus room for the caller's
        # per-row work of a few N-vectors (forces, weights, control variate).
        per_row = (self.n_observables_ + 8) * N if factored else self.n_components_ * N
        for rows in row_chunks(len(X), per_row):
            x = torch.as_tensor(X[rows], device=self.device)
            with torch.no_grad():
                z = self.module_.encode(x)
            if factored:
                yield rows, z, self.module_.jacobian_factors(x).detach()
            else:
                yield rows, z, self.module_.jacobian(x).detach()

    def transform(self, X):
        """Encode microscopic states.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        Z : LatentArray of shape (n_samples, n_components)
            ``Z[:, :d*]`` are the observables, the rest the closure.
        """
        check_is_fitted(self, "module_")
        X = validate_data(self, X, dtype=np.float32, reset=False)
        Z = self._encode(X).numpy()
        return LatentArray(Z, encoder=self, source=X)

    def fit_transform(self, X, y=None, **fit_params):
        """Fit, then encode ``X``; see :meth:`fit` and :meth:`transform`."""
        return self.fit(X, y, **fit_params).transform(X)

    def inverse_transform(self, Z):
        """Decode latent coordinates.

        Parameters
        ----------
        Z : array-like of shape (n_samples, n_components)

        Returns
        -------
        X_hat : ndarray of shape (n_samples, n_features)
        """
        check_is_fitted(self, "module_")
        Z = check_states(Z, "Z", n_features=self.n_components_)
        with torch.no_grad():
            X_hat = self.module_.decode(torch.as_tensor(Z, device=self.device))
        return X_hat.cpu().numpy()

    def jacobian(self, X):
        """Encoder Jacobians ``phi'(x)``.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)

        Returns
        -------
        J : ndarray of shape (n_samples, n_components, n_features)
            Memory grows as ``n_samples * d * N``: for large systems iterate
            with :meth:`iter_jacobians` instead.
        """
        return np.concatenate([J.cpu().numpy() for _, _, J in self.iter_jacobians(X)])

    def get_feature_names_out(self, input_features=None):
        """Names of the latent coordinates: the observables', then
        ``closure_0, ...``.

        Returns
        -------
        ndarray of str of shape (n_components,)
        """
        check_is_fitted(self, "module_")
        names = getattr(
            getattr(self.observables, "__self__", None), "observable_names", None
        )
        if names is None or len(names) != self.n_observables_:
            names = [f"z*_{i}" for i in range(self.n_observables_)]
        closure = [
            f"closure_{i}" for i in range(self.n_components_ - self.n_observables_)
        ]
        return np.asarray([*names, *closure], dtype=object)
