"""What both skmacro estimators share on top of ``skorch.NeuralNet``: seeding,
the parameter surface, the validation split (made before any cross-row
computation), fast in-memory batching, a learning-rate schedule, divergence
handling that keeps the best parameters, the device, and progress display."""

import contextlib
import copy
import functools
import inspect
import math
import warnings
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GroupShuffleSplit, ShuffleSplit
from sklearn.utils import check_random_state
from sklearn.utils._available_if import available_if
from sklearn.utils._param_validation import Interval, Options, StrOptions
from skorch import NeuralNet
from skorch.callbacks import (
    Callback,
    EarlyStopping,
    EpochTimer,
    LRScheduler,
    PassthroughScoring,
    PrintLog,
)
from torch.utils.data import Subset
from tqdm.auto import tqdm

from ._torch_data import BatchIterator, RowStream, StreamingBatches, TensorDataset


class DivergenceWarning(ConvergenceWarning):
    """Training stopped because the loss became non-finite."""


class KeepBestParameters(Callback):
    """Track the best epoch, restore its parameters when training ends, and stop
    with a clear warning as soon as the loss stops being finite.

    The monitored score is ``valid_loss`` when a validation split exists and
    ``train_loss`` otherwise.
    """

    def on_train_begin(self, net, **kwargs):
        self.best_score_ = math.inf
        self.best_epoch_ = None
        self.best_state_ = copy.deepcopy(net.module_.state_dict())

    def on_epoch_end(self, net, **kwargs):
        row = net.history[-1]
        score = row.get("valid_loss", row["train_loss"])
        if not (math.isfinite(score) and math.isfinite(row["train_loss"])):
            best = (
                f"the parameters of epoch {self.best_epoch_}"
                if self.best_epoch_ is not None
                else "the parameters it started from"
            )
            warnings.warn(
                f"{type(net).__name__}: the loss became non-finite at epoch "
                f"{row['epoch']}; training stopped and {best} were kept. "
                "Lower `lr` or check the data for outliers.",
                DivergenceWarning,
                stacklevel=2,
            )
            # skorch ends fit_loop quietly on KeyboardInterrupt and still calls
            # on_train_end, where the best parameters are restored.
            raise KeyboardInterrupt
        if score < self.best_score_:
            self.best_score_ = score
            self.best_epoch_ = row["epoch"]
            self.best_state_ = copy.deepcopy(net.module_.state_dict())

    def on_train_end(self, net, **kwargs):
        net.module_.load_state_dict(self.best_state_)
        net.best_epoch_ = self.best_epoch_
        # A copy of the weights is not part of the fitted state: it would
        # double the size of every pickle.
        del self.best_state_


class EpochProgress(Callback):
    """A tqdm bar over epochs showing the latest losses."""

    def __init__(self, description=None):
        self.description = description

    def on_train_begin(self, net, **kwargs):
        self.bar_ = tqdm(
            total=net.max_epochs, desc=self.description or type(net).__name__
        )

    def on_epoch_end(self, net, **kwargs):
        row = net.history[-1]
        shown = {k: f"{row[k]:.3g}" for k in ("train_loss", "valid_loss") if k in row}
        self.bar_.set_postfix(shown, refresh=False)
        self.bar_.update()

    def on_train_end(self, net, **kwargs):
        # A bar holds its output stream, which cannot be pickled: drop it so
        # that an estimator fitted with a progress bar still pickles.
        self.bar_.close()
        del self.bar_


def cosine_decay(epoch, n_epochs, floor=1e-2):
    """Learning-rate factor of a cosine schedule from 1 down to ``floor``
    over ``n_epochs``. As a factor it scales every parameter group's own
    rate, where ``CosineAnnealingLR``'s absolute ``eta_min`` would raise a
    group that starts below it."""
    return floor + (1 - floor) * 0.5 * (
        1 + math.cos(math.pi * min(epoch, n_epochs) / n_epochs)
    )


def resolve_device(device):
    """The torch device a ``device`` parameter stands for: ``"auto"`` is CUDA
    when available, else the CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


class _RowIndex(torch.utils.data.Dataset):
    """Row numbers ``0 ... n - 1``, for a skorch-style ``train_split``
    callable to split."""

    def __init__(self, n_rows):
        self.n_rows = n_rows

    def __len__(self):
        return self.n_rows

    def __getitem__(self, index):
        return index


class SkmacroNet(NeuralNet):
    """Base class: a ``NeuralNet`` trained on in-memory tensors.

    Subclasses define ``__init__`` (keyword arguments stored as is), list the
    prefixes their ``**kwargs`` may use in ``accepted_prefixes``, implement
    :meth:`build_module`, and train with :meth:`_train` inside
    :meth:`_resolved_device`.
    """

    #: Prefixes of the ``**kwargs`` an estimator honours (skorch's
    #: ``optimizer__...``, ``callbacks__...``).
    accepted_prefixes = ("optimizer", "callbacks")
    # Only the prefixes skorch itself needs at run time: skmacro makes its own
    # datasets and iterators, and does not compile.
    prefixes_ = ["callbacks"]

    # A regressor or transformer has no class probabilities.
    predict_proba = available_if(lambda self: False)(NeuralNet.predict_proba)

    # scikit-learn reads _parameter_constraints; subclasses extend the shared
    # constraints through their public name.
    _parameter_constraints = NET_CONSTRAINTS = {
        "lr": [Interval(Real, 0, None, closed="neither")],
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [
            Interval(Integral, 1, None, closed="left"),
            Options(Integral, {-1}),
        ],
        "validation_fraction": [Interval(Real, 0, 1, closed="left"), None],
        "train_split": [StrOptions({"auto"}), callable, None],
        "patience": [Interval(Integral, 1, None, closed="left"), None],
        "warm_start": ["boolean"],
        "verbose": ["verbose"],
        "device": [StrOptions({"cpu", "cuda", "auto"}), str, torch.device],
        "random_state": ["random_state"],
    }

    # -- the parameter surface ---------------------------------------------
    def _get_param_names(self):
        """The constructor's parameters and the prefixed ones the user set
        (``optimizer__betas``, ...): not skorch's internal attributes."""
        signature = inspect.signature(type(self).__init__)
        names = [
            p.name
            for p in signature.parameters.values()
            if p.name != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
        ]
        prefixed = [
            key
            for key in self.__dict__
            if "__" in key and not key.startswith("_") and not key.endswith("_")
        ]
        return names + prefixed

    def _validate_params(self):
        """skorch's check of the prefixed arguments, restricted to the
        prefixes this estimator honours."""
        unknown = sorted(
            key
            for key in self._params_to_validate
            if not key.endswith("_")
            and key.split("__")[0] not in self.accepted_prefixes
        )
        if unknown:
            accepted = ", ".join(f"{p}__..." for p in self.accepted_prefixes)
            raise ValueError(
                f"{type(self).__name__} got unexpected argument(s) "
                f"{', '.join(unknown)}; prefixed arguments may be {accepted}"
            )
        super()._validate_params()

    def _check_hyperparameters(self):
        """Validate hyper-parameters: skorch's prefixed arguments are checked
        in ``initialize``; scikit-learn's constraints here (skorch's
        ``_validate_params`` shadows scikit-learn's, so call it by name)."""
        BaseEstimator._validate_params(self)

    # -- randomness and device ---------------------------------------------
    def _seeds(self):
        """Seeds for (module initialisation, shuffling, validation split)."""
        rng = check_random_state(self.random_state)
        return [int(s) for s in rng.randint(0, 2**31 - 1, size=3)]

    @contextlib.contextmanager
    def _resolved_device(self):
        """Within the block, ``device`` holds the torch device it stands for
        (skorch reads it everywhere); the parameter is restored afterwards."""
        requested = self.device
        self.device = resolve_device(requested)
        try:
            yield self.device
        finally:
            self.device = requested

    @property
    def device_(self):
        """The torch device the fitted module lives on."""
        if not hasattr(self, "module_"):
            raise AttributeError("device_ is set by fit")
        return self._module_device

    @property
    def _module_device(self):
        """Where the fitted module lives (after unpickling on a machine
        without the device it was fitted on, the CPU)."""
        return next(iter(self.module_.buffers())).device

    def __setstate__(self, state):
        requested = state.get("device")
        if requested == "auto":
            state["device"] = str(resolve_device("auto"))
        super().__setstate__(state)
        if requested == "auto":
            self.device = "auto"

    # -- the validation split -------------------------------------------------
    def _split_rows(self, n_rows, groups=None):
        """Training and validation rows, decided before any computation that
        reads several rows, so the validation rows stay unseen by it.

        Returns
        -------
        train : ndarray of int
        valid : ndarray of int or None
        """
        split = self.train_split
        every = np.arange(n_rows)
        if split is None or (split == "auto" and not self.validation_fraction):
            return every, None
        if split == "auto":
            if n_rows < 2:
                raise ValueError(
                    f"validation_fraction={self.validation_fraction!r} needs at "
                    f"least 2 rows to hold some out, got n_samples={n_rows}: pass "
                    "validation_fraction=None to train on every row"
                )
            # With groups (e.g. trajectory ids) whole groups go to validation,
            # so its loss measures generalisation to unseen trajectories.
            splitter = GroupShuffleSplit if groups is not None else ShuffleSplit
            cv = splitter(
                n_splits=1,
                test_size=self.validation_fraction,
                random_state=self._seeds()[2],
            )
            train, valid = next(cv.split(every, groups=groups))
            return train, valid
        params = {} if groups is None else {"groups": groups}
        parts = split(_RowIndex(n_rows), None, **params)
        if not (
            isinstance(parts, tuple)
            and len(parts) == 2
            and all(isinstance(p, Subset) for p in parts if p is not None)
        ):
            raise TypeError(
                "train_split must return (train, valid) subsets of the dataset it "
                "is given (as skorch's ValidSplit does), got "
                f"{type(parts).__name__}"
            )
        train, valid = parts
        return (
            np.asarray(train.indices),
            None if valid is None else np.asarray(valid.indices),
        )

    def _has_validation(self):
        return self.train_split is not None and (
            self.train_split != "auto" or bool(self.validation_fraction)
        )

    def get_split_datasets(self, X, y=None, **fit_params):
        train, valid = self.train_rows_, self.validation_rows_
        if isinstance(X, (dict, torch.Tensor)):
            dataset = TensorDataset(X, y)
            return Subset(dataset, train), None if valid is None else Subset(
                dataset, valid
            )
        # States that may live on disk: streamed in blocks.
        return RowStream(X, train), None if valid is None else RowStream(X, valid)

    # -- training ---------------------------------------------------------------
    def _train(self, data, train, valid):
        """Train the initialised net for ``max_epochs`` epochs on the rows
        ``train`` of ``data`` (a tensor or dict of tensors held in memory, or
        states ``X`` anywhere, streamed), validating on ``valid`` (or
        None)."""
        self.train_rows_, self.validation_rows_ = train, valid
        NeuralNet.partial_fit(self, data, None)
        return self

    def _is_trained(self):
        return getattr(self, "initialized_", False) and hasattr(self, "n_features_in_")

    def get_default_callbacks(self):
        callbacks = [
            ("epoch_timer", EpochTimer()),
            ("train_loss", PassthroughScoring(name="train_loss", on_train=True)),
            ("valid_loss", PassthroughScoring(name="valid_loss")),
            (
                "lr_scheduler",
                LRScheduler(
                    policy=torch.optim.lr_scheduler.LambdaLR,
                    lr_lambda=functools.partial(cosine_decay, n_epochs=self.max_epochs),
                ),
            ),
            ("keep_best", KeepBestParameters()),
        ]
        if self.patience is not None:
            monitor = "valid_loss" if self._has_validation() else "train_loss"
            callbacks.append(
                (
                    "early_stopping",
                    EarlyStopping(monitor=monitor, patience=self.patience),
                )
            )
        if self.verbose >= 2:
            callbacks.append(("print_log", PrintLog()))
        elif self.verbose:
            callbacks.append(("progress", EpochProgress()))
        return callbacks

    def get_iterator(self, dataset, training=False):
        batch_size = len(dataset) if self.batch_size == -1 else self.batch_size
        iterator = StreamingBatches if isinstance(dataset, RowStream) else BatchIterator
        if not training:
            return iterator(dataset, batch_size=batch_size)
        seed = self._seeds()[1] + len(self.history)
        return iterator(dataset, batch_size=batch_size, shuffle=True, seed=seed)

    def initialize_module(self):
        # Module initialisation must not consume (or depend on) the global
        # torch RNG: seed a private copy from random_state.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self._seeds()[0])
            self.module_ = self.build_module()
        return self

    def build_module(self):
        raise NotImplementedError

    def initialize_optimizer(self):
        named_parameters = self.get_all_learnable_params()
        args, kwargs = self.get_params_for_optimizer("optimizer", named_parameters)
        if "fused" in inspect.signature(self.optimizer).parameters:
            # One fused update instead of a Python loop over the parameter
            # tensors: ~15% of a small latent model's step on CPU.
            kwargs.setdefault("fused", True)
        self.optimizer_ = self.optimizer(*args, **kwargs)
        return self
