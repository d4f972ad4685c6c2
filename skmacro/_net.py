"""What both skmacro estimators share on top of ``skorch.NeuralNet``: seeding,
fast in-memory batching, a validation split, a learning-rate schedule,
divergence handling that keeps the best parameters, and progress display."""

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
from torch.utils.data import Dataset, Subset
from tqdm.auto import tqdm

from ._torch_data import BatchIterator, TensorDataset


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


class SkmacroNet(NeuralNet):
    """Base class: a ``NeuralNet`` trained on in-memory tensors.

    Subclasses define ``__init__`` (keyword arguments stored as is) and call
    :meth:`_fit_tensors` from ``fit``.
    """

    # A regressor or transformer has no class probabilities.
    predict_proba = available_if(lambda self: False)(NeuralNet.predict_proba)

    def _seeds(self):
        """Seeds for (module initialisation, shuffling, validation split)."""
        rng = check_random_state(self.random_state)
        return [int(s) for s in rng.randint(0, 2**31 - 1, size=3)]

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
            monitor = (
                "valid_loss"
                if self.validation_fraction or self.train_split
                else "train_loss"
            )
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
        kwargs = self.get_params_for("iterator_train" if training else "iterator_valid")
        kwargs.setdefault("batch_size", self.batch_size)
        if kwargs["batch_size"] == -1:
            kwargs["batch_size"] = len(dataset)
        if training:
            kwargs.setdefault("shuffle", True)
            kwargs.setdefault("seed", self._seeds()[1] + len(self.history))
        return BatchIterator(dataset, **kwargs)

    def get_dataset(self, X, y=None):
        return X if isinstance(X, Dataset) else TensorDataset(X, y)

    def get_split_datasets(self, X, y=None, groups=None, **fit_params):
        dataset = self.get_dataset(X, y)
        if self.train_split is not None:
            split_params = {} if groups is None else {"groups": groups}
            return self.train_split(dataset, **split_params)
        fraction = self.validation_fraction
        if not fraction:
            return dataset, None
        # With groups (e.g. trajectory ids) whole groups go to validation, so
        # its loss measures generalisation to unseen trajectories.
        splitter = GroupShuffleSplit if groups is not None else ShuffleSplit
        cv = splitter(n_splits=1, test_size=fraction, random_state=self._seeds()[2])
        train, valid = next(cv.split(np.arange(len(dataset)), groups=groups))
        return Subset(dataset, train), Subset(dataset, valid)

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

    def _fit_tensors(self, data, **split_params):
        """Train the initialised net on ``data`` (a tensor or dict of tensors,
        rows = samples) for ``max_epochs`` epochs."""
        NeuralNet.partial_fit(self, data, None, **split_params)
        return self

    def _is_trained(self):
        return getattr(self, "initialized_", False) and hasattr(self, "n_features_in_")

    _parameter_constraints = {
        "lr": [Interval(Real, 0, None, closed="neither")],
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [
            Interval(Integral, 1, None, closed="left"),
            Options(Integral, {-1}),
        ],
        "validation_fraction": [Interval(Real, 0, 1, closed="left"), None],
        "patience": [Interval(Integral, 1, None, closed="left"), None],
        "warm_start": ["boolean"],
        "verbose": ["verbose"],
        "device": [StrOptions({"cpu", "cuda", "auto"}), str, torch.device],
        "random_state": ["random_state"],
    }

    def _check_hyperparameters(self):
        """Validate hyper-parameters: skorch's prefixed arguments are checked
        in ``initialize``; scikit-learn's constraints here (skorch's
        ``_validate_params`` shadows scikit-learn's, so call it by name)."""
        BaseEstimator._validate_params(self)
        if self.device == "auto":
            # skorch reads `device` everywhere, so it holds the resolved device.
            self.device = "cuda" if torch.cuda.is_available() else "cpu"
