"""What both skmacro estimators share on top of ``skorch.NeuralNet``: seeding,
the parameter surface, the validation split (made before any cross-row
computation), fast in-memory batching, a learning-rate schedule, divergence
handling that keeps the best parameters, the device, and progress display."""

import contextlib
import copy
import functools
import inspect
import math
import time
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


class EpochLRScheduler(LRScheduler):
    """skorch's ``LRScheduler`` with a per-epoch cosine decay of the learning
    rate over the epochs the fit plans (``net.fit_epochs_``, known only once
    the fit has seen its data), down to ``floor`` times the initial rate.

    It lets go of its scheduler when training ends. The scheduler holds the
    optimizer, which skorch pickles on its own (``optimizer_``); kept, it
    would be pickled a second time with the callbacks, doubling a fitted
    net's pickle (the optimizer holds the parameters and Adam's two
    moments). A new fit makes a new scheduler."""

    def __init__(self, floor=1e-2):
        super().__init__(policy=torch.optim.lr_scheduler.LambdaLR)
        self.floor = floor

    def _get_scheduler(self, net, policy, **kwargs):
        # Every fit, warm-started or partial ones included, follows its own
        # schedule from the current ``lr``.
        net._restart_learning_rates()
        factor = functools.partial(
            cosine_decay, n_epochs=net.fit_epochs_, floor=self.floor
        )
        return policy(net.optimizer_, factor)

    def on_train_end(self, net, **kwargs):
        super().on_train_end(net, **kwargs)
        self.lr_scheduler_ = None


class EpochProgress(Callback):
    """A tqdm bar over epochs showing the latest losses."""

    def __init__(self, description=None):
        self.description = description

    def on_train_begin(self, net, **kwargs):
        # A net trained in steps plans its number of history rows itself.
        total = getattr(net, "_planned_rows", None) or net.fit_epochs_
        self.bar_ = tqdm(total=total, desc=self.description or type(net).__name__)

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


#: Key of each optimizer parameter group's ratio of its rate to ``lr``.
_LR_RATIO = "skmacro_lr_ratio"

#: Rows of each chunk of a validation pass.
VALIDATION_ROWS = 65536
#: Fewest optimiser steps between two evaluations of the validation loss (one
#: history row each): when an epoch is shorter, several epochs make a row.
EVAL_STEPS = 25


class _BestMembers:
    """The best parameters of each member of an ensemble seen so far, by its
    own monitored loss, and the epoch they were seen at.

    Parameters
    ----------
    members : list of torch.nn.Module
        The members' modules (one for a single model); their parameters and
        buffers are saved and restored in place.
    """

    def __init__(self, members):
        self.tensors = [[*m.parameters(), *m.buffers()] for m in members]
        self.saved = [[t.detach().clone() for t in ts] for ts in self.tensors]
        self.score = np.full(len(members), np.inf)
        self.epoch = [None] * len(members)
        self.row = np.full(len(members), -1)

    def update(self, scores, epoch, row):
        """Save the members whose ``scores`` (one per member) improved."""
        with torch.no_grad():
            for m, score in enumerate(scores):
                if score < self.score[m]:
                    self.score[m], self.epoch[m], self.row[m] = score, epoch, row
                    pairs = zip(self.saved[m], self.tensors[m], strict=True)
                    for saved, tensor in pairs:
                        saved.copy_(tensor)

    def restore(self):
        with torch.no_grad():
            for saved, tensors in zip(self.saved, self.tensors, strict=True):
                for value, tensor in zip(saved, tensors, strict=True):
                    tensor.copy_(value)


def _pack(tensors):
    """Tensors with the same first dimension side by side in one 2-D tensor,
    and the function that splits rows of it back into views of their shapes.

    Parameters
    ----------
    tensors : dict of torch.Tensor of shape (n, ...)

    Returns
    -------
    packed : torch.Tensor of shape (n, total)
    unpack : callable
        ``unpack(packed[index])`` for ``index`` of shape (...) gives a dict of
        tensors of shape ``(*index.shape, *trailing)``.
    """
    keys = list(tensors)
    shapes = [tensors[key].shape[1:] for key in keys]
    widths = [math.prod(shape) for shape in shapes]
    n = len(tensors[keys[0]])
    packed = torch.cat([tensors[key].reshape(n, -1) for key in keys], dim=1)

    def unpack(rows):
        parts = torch.split(rows, widths, dim=-1)
        lead = rows.shape[:-1]
        return {
            key: part.reshape(*lead, *shape)
            for key, part, shape in zip(keys, parts, shapes, strict=True)
        }

    return packed, unpack


def _overrides(callback, name):
    """Whether a skorch callback implements the hook ``name`` itself."""
    return getattr(type(callback), name) is not getattr(Callback, name)


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
        "min_steps": [Interval(Integral, 1, None, closed="left")],
        "min_epochs": [Interval(Integral, 1, None, closed="left")],
        "max_epochs": [Interval(Integral, 1, None, closed="left"), None],
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
        """Train the initialised net for the epochs of one fit (see
        :meth:`_planned_epochs`) on the rows ``train`` of ``data`` (a tensor
        or dict of tensors held in memory, or states ``X`` anywhere,
        streamed), validating on ``valid`` (or None)."""
        self.train_rows_, self.validation_rows_ = train, valid
        n = len(train)
        batch = n if self.batch_size == -1 else min(int(self.batch_size), n)
        self.fit_epochs_ = self._planned_epochs(math.ceil(n / batch))
        NeuralNet.partial_fit(self, data, None, epochs=self.fit_epochs_)
        return self

    def _member_modules(self):
        """The independently trained members of ``module_`` (each is saved and
        restored by its own validation loss); the whole module by default."""
        return [self.module_]

    def _planned_epochs(self, steps_per_epoch):
        """Epochs of one fit: ``max_epochs``, or when it is None the fewest
        whole epochs that make at least ``min_steps`` optimiser steps and at
        least ``min_epochs`` epochs."""
        if self.max_epochs is not None:
            return int(self.max_epochs)
        return max(int(self.min_epochs), math.ceil(self.min_steps / steps_per_epoch))

    def _train_in_steps(self, data, train, valid, seed):
        """Train the initialised net on the rows ``train`` of ``data`` with a
        per-step schedule, validating on ``valid`` (or None).

        ``module_`` maps a batch ``{"z": (k, b, d), ...}`` of each of its
        ``k`` members' own rows to their outputs, and ``get_loss`` returns the
        ``k`` members' losses; the members are trained together on the sum,
        each on its own shuffle of the rows, and each keeps the parameters of
        its best evaluation. The learning rate follows a cosine from ``lr`` to
        ``lr / 100`` over the planned steps (see :meth:`_planned_epochs`).
        ``patience`` stops the run early.
        The validation loss is evaluated, and a history row written, after
        every epoch, or after as many epochs as make ``EVAL_STEPS`` steps
        when an epoch is shorter, and after the last epoch.

        Parameters
        ----------
        data : dict of torch.Tensor
            Float32 tensors with one row per configuration (every row, held
            out ones included).
        train, valid : ndarray of int, valid may be None
            Training and validation rows.
        seed : int
            Seed of the shuffles.
        """
        self.train_rows_, self.validation_rows_ = train, valid
        members = self._member_modules()
        k = len(members)
        device = self.device
        rows = torch.as_tensor(train, dtype=torch.long)
        # One gather per step: the training rows of every tensor side by side.
        packed, unpack = _pack({key: value[rows] for key, value in data.items()})
        packed = packed.to(device)
        valid_data = None
        if valid is not None and len(valid):
            index = torch.as_tensor(valid, dtype=torch.long)
            valid_data = {key: value[index].to(device) for key, value in data.items()}
        n = len(train)
        batch = n if self.batch_size == -1 else min(int(self.batch_size), n)
        per_epoch = math.ceil(n / batch)
        n_epochs = self.fit_epochs_ = self._planned_epochs(per_epoch)
        total_steps = n_epochs * per_epoch
        row_epochs = max(1, math.ceil(EVAL_STEPS / per_epoch))
        self._planned_rows = math.ceil(n_epochs / row_epochs)
        self._restart_learning_rates()
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer_,
            functools.partial(cosine_decay, n_epochs=total_steps),
        )
        generator = torch.Generator().manual_seed(int(seed))
        best = _BestMembers(members)
        batch_hooks = [
            cb
            for _, cb in self.callbacks_
            if _overrides(cb, "on_batch_begin") or _overrides(cb, "on_batch_end")
        ]
        datasets = self.get_split_datasets(data)
        epoch_kwargs = {"dataset_train": datasets[0], "dataset_valid": datasets[1]}
        done_epochs = len(self.history) and self.history[-1].get("epoch", 0)
        step = 0
        self.notify("on_train_begin", X=data, y=None)
        self.module_.train()
        try:
            for first in range(0, n_epochs, row_epochs):
                # skorch's own on_epoch_begin opens the history row.
                self.notify("on_epoch_begin", **epoch_kwargs)
                start = time.perf_counter()
                train_sum = torch.zeros(k, device=device)
                count = 0
                for _ in range(min(row_epochs, n_epochs - first)):
                    order = torch.stack(
                        [torch.randperm(n, generator=generator) for _ in range(k)]
                    ).to(device)
                    for lo in range(0, n, batch):
                        index = order[:, lo : lo + batch]
                        X = self._training_batch(unpack(packed[index]), generator)
                        for cb in batch_hooks:
                            cb.on_batch_begin(self, batch=(X, None), training=True)
                        y_pred = self.infer(X)
                        losses = self.get_loss(y_pred, None, X=X, training=True)
                        self.optimizer_.zero_grad(set_to_none=True)
                        losses.sum().backward()
                        self.optimizer_.step()
                        scheduler.step()
                        train_sum += losses.detach()
                        count += 1
                        step += 1
                        for cb in batch_hooks:
                            cb.on_batch_end(
                                self,
                                batch=(X, None),
                                training=True,
                                loss=losses.sum(),
                                y_pred=y_pred,
                            )
                epoch = done_epochs + min(first + row_epochs, n_epochs)
                train_loss = (train_sum / count).cpu().numpy()
                monitored = train_loss
                history = self.history
                history.record("epoch", epoch)
                history.record("step", step)
                history.record("train_loss", float(train_loss.mean()))
                if valid_data is not None:
                    monitored = self._validation_losses(valid_data, k)
                    history.record("valid_loss", float(monitored.mean()))
                history.record("lr", self.optimizer_.param_groups[0]["lr"])
                history.record("dur", time.perf_counter() - start)
                if not (
                    np.all(np.isfinite(monitored)) and np.all(np.isfinite(train_loss))
                ):
                    self._warn_divergence(epoch, best)
                    break
                best.update(monitored, epoch, len(history) - 1)
                self.notify("on_epoch_end", **epoch_kwargs)
                if (
                    self.patience is not None
                    and len(history) - 1 - best.row.max() >= self.patience
                ):
                    break
        except KeyboardInterrupt:
            pass  # as skorch does: stop quietly, keep the best parameters
        finally:
            best.restore()
            self.module_.eval()
            del self._planned_rows
        self.best_epoch_ = best.epoch[0] if k == 1 else np.asarray(best.epoch)
        self.notify("on_train_end", X=data, y=None)
        return self

    def _training_batch(self, X, generator):
        """The batch a training step sees (validation batches never pass
        here); a subclass may perturb it, drawing from ``generator``."""
        return X

    def _validation_losses(self, valid_data, k):
        """Each member's loss on every validation row, shape (k,)."""
        n = len(next(iter(valid_data.values())))
        total = torch.zeros(k, device=self.device)
        with torch.no_grad():
            for lo in range(0, n, VALIDATION_ROWS):
                X = {
                    key: value[lo : lo + VALIDATION_ROWS]
                    for key, value in valid_data.items()
                }
                losses = self.get_loss(self.infer(X), None, X=X, training=False)
                total += losses * min(VALIDATION_ROWS, n - lo)
        return (total / n).cpu().numpy()

    def _warn_divergence(self, epoch, best):
        kept = (
            "each member's best parameters"
            if len(best.epoch) > 1
            else (
                f"the parameters of epoch {best.epoch[0]}"
                if best.epoch[0] is not None
                else "the parameters it started from"
            )
        )
        warnings.warn(
            f"{type(self).__name__}: the loss became non-finite by epoch "
            f"{epoch}; training stopped and {kept} were kept. Lower `lr` or "
            "check the data for outliers.",
            DivergenceWarning,
            stacklevel=4,
        )

    def _is_trained(self):
        return getattr(self, "initialized_", False) and hasattr(self, "n_features_in_")

    def _starts_afresh(self):
        """Whether ``fit`` initialises the parameters (not a warm start of a
        trained model)."""
        return not (self.warm_start and self._is_trained())

    def _set_params_callback(self, **params):
        # skorch unpacks callbacks_ as name/callback pairs, which fails when
        # the net has no callbacks at all (the dynamics at verbose=0).
        if "callbacks" in params:
            self.callbacks = params.pop("callbacks")
        if params and not self.callbacks_:
            names = sorted({key.split("__")[1] for key in params})
            raise ValueError(
                f"no callback named {names}: this net has no callbacks (pass "
                "callbacks=[(name, callback)] to add one)"
            )
        return super()._set_params_callback(**params) if params else self

    @property
    def _default_callbacks(self):
        # skorch lists these in get_params; they must be the callbacks this
        # net actually builds, or set_params(**get_params()) fails.
        return self.get_default_callbacks()

    def get_default_callbacks(self):
        callbacks = [
            ("epoch_timer", EpochTimer()),
            ("train_loss", PassthroughScoring(name="train_loss", on_train=True)),
            ("valid_loss", PassthroughScoring(name="valid_loss")),
            ("lr_scheduler", EpochLRScheduler()),
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
        return callbacks + self._display_callbacks()

    def _display_callbacks(self):
        """The progress bar (``verbose=1``) or table (``verbose >= 2``)."""
        if self.verbose >= 2:
            return [("print_log", PrintLog())]
        if self.verbose:
            return [("progress", EpochProgress())]
        return []

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
        for group in self.optimizer_.param_groups:
            group[_LR_RATIO] = group["lr"] / self.lr
        return self

    def _restart_learning_rates(self):
        """Set every parameter group's rate to its start of a schedule: ``lr``
        times the group's ratio to ``lr`` when the optimizer was made (1 but
        for groups given their own rate). A fit that continues training
        (``warm_start``, ``partial_fit``) thus starts from the current
        ``lr``, not from where the last schedule ended."""
        for group in self.optimizer_.param_groups:
            # Optimizers pickled before the ratio was kept: the rate the last
            # schedule started from.
            ratio = group.get(_LR_RATIO, group.get("initial_lr", self.lr) / self.lr)
            group["lr"] = group["initial_lr"] = self.lr * ratio

    def _continue_training(self):
        """Before a fit that continues from the trained parameters: rebuild
        the criterion and the callbacks from the current parameters (e.g. a
        new ``lambda_cond`` or ``patience``), as a fresh fit would."""
        self.initialize_criterion()
        self.initialize_callbacks()
        return self
