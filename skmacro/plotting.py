"""Matplotlib helpers: training curves and observables along trajectories."""

import numpy as np

__all__ = ["plot_history", "plot_observables"]


def _axes(ax, n=1):
    import matplotlib.pyplot as plt

    if ax is not None:
        return ax
    _, axes = plt.subplots(1, n, figsize=(4.5 * n, 3.2), squeeze=False)
    return axes[0] if n > 1 else axes[0, 0]


def plot_history(estimator, ax=None, keys=("train_loss", "valid_loss")):
    """Losses of a fitted skmacro estimator over its history's rows (epochs,
    or groups of short epochs for ``PartialForceDynamics``), against the
    epoch count.

    Parameters
    ----------
    estimator : ClosureAutoencoder or PartialForceDynamics
        Fitted; its ``history_`` is read.
    ax : matplotlib Axes, optional
    keys : sequence of str, default=("train_loss", "valid_loss")
        History columns to draw (missing ones are skipped).

    Returns
    -------
    matplotlib Axes
    """
    history = getattr(estimator, "history_", None)
    if not history:
        raise ValueError(
            f"{type(estimator).__name__} has no training history: fit it first"
        )
    ax = _axes(ax)
    epochs = history[:, "epoch"]
    for key in keys:
        if all(key in row for row in history):
            ax.plot(epochs, history[:, key], label=key)
    best = getattr(estimator, "best_epoch_", None)
    if best is not None and np.ndim(best) == 0:
        ax.axvline(best, color="grey", ls=":", label=f"kept epoch {best}")
    elif best is not None:  # an ensemble: one kept epoch per member
        for m, epoch in enumerate(b for b in best if b is not None):
            ax.axvline(
                epoch, color="grey", ls=":", label="kept epochs" if m == 0 else None
            )
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.set_title(type(estimator).__name__)
    ax.legend()
    return ax


def plot_observables(
    t,
    z_true,
    z_pred=None,
    names=None,
    axes=None,
    label="predicted",
    z_std=None,
    n_std=2.0,
):
    """Observables along one trajectory, true and (optionally) predicted,
    with an uncertainty band.

    Parameters
    ----------
    t : array-like of shape (T,)
    z_true : array-like of shape (T, k)
    z_pred : array-like of shape (T_pred, k) or None
        Drawn dashed; if ``T_pred != T`` it is drawn against
        ``np.linspace(t[0], t[-1], T_pred)``.
    names : sequence of str, optional
        Axis labels, one per observable.
    axes : sequence of matplotlib Axes, optional
        One per observable.
    label : str, default="predicted"
    z_std : array-like of shape (T_pred, k) or None
        Spread of the prediction (e.g. ``simulate(..., return_std=True)`` of
        an ensemble): the band ``z_pred +- n_std * z_std`` is shaded.
    n_std : float, default=2.0
        Half-width of the band in standard deviations.

    Returns
    -------
    list of matplotlib Axes
    """
    t = np.asarray(t)
    z_true = _one_trajectory(z_true, "z_true")
    if t.ndim != 1 or len(t) != len(z_true):
        raise ValueError(
            f"t must be 1-D with one time per row of z_true ({len(z_true)}), "
            f"got shape {t.shape}"
        )
    k = z_true.shape[1]
    if z_std is not None and z_pred is None:
        raise ValueError("z_std is the spread of z_pred: give z_pred too")
    if z_pred is not None:
        z_pred = _one_trajectory(z_pred, "z_pred", k)
        t_pred = t if len(z_pred) == len(t) else np.linspace(t[0], t[-1], len(z_pred))
    if z_std is not None:
        z_std = np.asarray(z_std)
        if z_std.shape != z_pred.shape:
            raise ValueError(
                f"z_std must have z_pred's shape {z_pred.shape}, got {z_std.shape}"
            )
    names = list(names) if names is not None else [f"z*_{i}" for i in range(k)]
    if len(names) != k:
        raise ValueError(f"names must have one entry per observable ({k}), got {names}")
    axes = list(np.atleast_1d(_axes(axes, k)))
    if len(axes) != k:
        raise ValueError(
            f"axes must hold one Axes per observable ({k}), got {len(axes)}"
        )
    for i, ax in enumerate(axes):
        ax.plot(t, z_true[:, i], "k", lw=1, label="true")
        if z_pred is not None:
            (line,) = ax.plot(t_pred, z_pred[:, i], "--", label=label)
            if z_std is not None:
                half = n_std * z_std[:, i]
                ax.fill_between(
                    t_pred,
                    z_pred[:, i] - half,
                    z_pred[:, i] + half,
                    color=line.get_color(),
                    alpha=0.25,
                    lw=0,
                    label=f"{label} ± {n_std:g} std",
                )
        ax.set_xlabel("t")
        ax.set_ylabel(names[i])
        ax.legend(fontsize=7)
    return axes


def _one_trajectory(z, name, k=None):
    """``z`` as an array (T, k) of one trajectory's observables, or a
    ``ValueError`` saying what was expected."""
    z = np.asarray(z)
    if z.ndim != 2:
        hint = (
            f"; for one trajectory of a batch (n, T, k) pass {name}[i]"
            if z.ndim == 3
            else ""
        )
        raise ValueError(
            f"{name} must be one trajectory, shape (T, k), got {z.shape}{hint}"
        )
    if k is not None and z.shape[1] != k:
        raise ValueError(
            f"{name} must have one column per observable of z_true ({k}), got "
            f"{z.shape[1]}"
        )
    return z
