"""What both skmacro estimators share on top of ``skorch.NeuralNet``: seeding,
fast in-memory batching, a validation split, a learning-rate schedule,
divergence handling that keeps the best parameters, and progress display."""

import copy
import math
import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from skorch import NeuralNet
from skorch.callbacks import (
    Callback,
    EpochTimer,
    LRScheduler,
    PassthroughScoring,
    PrintLog,
)
from skorch.dataset import ValidSplit
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
                f"epoch {self.best_epoch_}"
                if self.best_epoch_ is not None
                else "the initial parameters"
            )
            warnings.warn(
                f"{type(net).__name__}: the loss became non-finite at epoch "
                f"{row['epoch']}; training stopped and the parameters of {best} "
                "were kept. Lower `lr` or check the data for outliers.",
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
        self.bar_.close()


class SkmacroNet(NeuralNet):
    """Base class: a ``NeuralNet`` trained on in-memory tensors.

    Subclasses define ``__init__`` (keyword arguments stored as is) and call
    :meth:`_fit_tensors` from ``fit``.
    """

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
                    policy=torch.optim.lr_scheduler.CosineAnnealingLR,
                    T_max=self.max_epochs,
                    eta_min=self.lr * 1e-2,
                ),
            ),
            ("keep_best", KeepBestParameters()),
        ]
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

    def get_split_datasets(self, X, y=None, **fit_params):
        dataset = TensorDataset(X, y)
        if self.train_split is not None:
            return self.train_split(dataset, **fit_params)
        fraction = self.validation_fraction
        if not fraction:
            return dataset, None
        split = ValidSplit(fraction, random_state=self._seeds()[2])
        return split(dataset, **fit_params)

    def initialize_module(self):
        # Module initialisation must not consume (or depend on) the global
        # torch RNG: seed a private copy from random_state.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self._seeds()[0])
            self.module_ = self.build_module()
        return self

    def build_module(self):
        raise NotImplementedError

    def _fit_tensors(self, data, **split_params):
        """Train the initialised net on ``data`` (a tensor or dict of tensors,
        rows = samples)."""
        self.partial_fit(data, None, **split_params)
        return self

    def _needs_initialization(self):
        return not (self.warm_start and getattr(self, "initialized_", False))

    def _validate_common(self):
        if not (isinstance(self.max_epochs, (int, np.integer)) and self.max_epochs > 0):
            raise ValueError(
                f"max_epochs must be a positive integer, got {self.max_epochs!r}"
            )
        if not (
            isinstance(self.batch_size, (int, np.integer))
            and (self.batch_size > 0 or self.batch_size == -1)
        ):
            raise ValueError(
                f"batch_size must be a positive integer or -1, got {self.batch_size!r}"
            )
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")
        if self.validation_fraction is not None and not (
            0 <= self.validation_fraction < 1
        ):
            raise ValueError(
                "validation_fraction must be in [0, 1), got "
                f"{self.validation_fraction!r}"
            )
