"""The encoder protocol: everything :class:`~skmacro.PartialForceDynamics`,
:func:`skmacro.simulate`, the p-aware score and the metrics may ask of an
encoder, and the latent arrays that carry an encoder through a ``Pipeline``.

An encoder maps microscopic states ``x`` (N numbers) to latent coordinates
``z = phi(x) = (phi*(x), phi_hat(x))`` (d numbers), the first ``d*`` of which
are fixed observables. :class:`~skmacro.ClosureAutoencoder` is the library's
encoder; any object with the attributes and methods of :class:`Encoder`
plugs in the same way (``tests/test_encoders.py`` has a minimal one).

Fitted attributes
-----------------
``n_components_`` : int
    d, the latent size.
``n_observables_`` : int
    d*, the number of fixed observables (the first latent columns).
``n_features_in_`` : int
    N of the data it was fitted on.
``size_agnostic_`` : bool
    True if it also encodes states of other widths (particle systems of
    another size); False means every ``X`` must have ``n_features_in_``
    columns.
``latent_mean_``, ``latent_scale_`` : ndarray of shape (d,)
    Centre and spread of each latent coordinate on the training states.

Methods
-------
``transform(X)``
    (n, N) -> :class:`LatentArray` (n, d) linked to the encoder and ``X``.
``inverse_transform(Z)``
    (n, d) -> the encoder's reconstruction target (for the MLP closure, the
    states).
``get_feature_names_out()``
    d names, the observables' first.
``iter_jacobians(X, rows=None)``
    Yields ``(rows, z, J)`` over chunks of the selected rows of ``X``:
    ``rows`` the chunk's rows (a slice or an int array), ``z`` a
    (chunk, d) tensor and ``J`` the chunk's Jacobians ``phi'(x)`` as a
    :class:`JacobianBatch`. Chunks are sized so that the encoder's and the
    caller's per-row work stay within a memory budget.

A :class:`JacobianBatch` holds a batch of d x N Jacobians in whatever form is
cheap for the encoder and offers the three products the losses need:
``columns(index)`` (the columns at the computed coordinates),
``matvec(v)`` (``J v``) and ``gram()`` (``J J^T``), plus ``to`` and
``detach``.
"""

from typing import Protocol, runtime_checkable

import numpy as np

from ._arrays import n_rows

__all__ = ["Encoder", "JacobianBatch", "LatentArray", "linked_encoder"]

#: Key of the encoder link in a pandas ``DataFrame``'s ``attrs``.
LINK_KEY = "skmacro_latent_link"


@runtime_checkable
class JacobianBatch(Protocol):
    """A batch of encoder Jacobians ``J`` (each d x N) in structured form."""

    def columns(self, index):
        """``J[b, :, index[b]]``: index (batch, m) int64 -> (batch, d, m)."""

    def matvec(self, v):
        """``J v``: (batch, N) -> (batch, d)."""

    def gram(self):
        """``J J^T``, shape (batch, d, d)."""

    def to(self, *args, **kwargs):
        """The batch moved or cast like ``torch.Tensor.to``."""


@runtime_checkable
class Encoder(Protocol):
    """What the rest of skmacro may ask of a fitted encoder (see the module
    docstring for the meaning of each member)."""

    n_components_: int
    n_observables_: int
    n_features_in_: int
    size_agnostic_: bool
    latent_mean_: np.ndarray
    latent_scale_: np.ndarray

    def transform(self, X): ...

    def inverse_transform(self, Z): ...

    def get_feature_names_out(self, input_features=None): ...

    def iter_jacobians(self, X, rows=None): ...


#: Members :func:`check_encoder` looks for.
_REQUIRED = (
    "n_components_",
    "n_observables_",
    "n_features_in_",
    "size_agnostic_",
    "transform",
    "get_feature_names_out",
    "iter_jacobians",
)


def check_encoder(encoder):
    """Return ``encoder`` if it is a fitted encoder, else raise a ``TypeError``
    naming what it lacks.

    Parameters
    ----------
    encoder : object

    Returns
    -------
    object
    """
    missing = [name for name in _REQUIRED if not hasattr(encoder, name)]
    if missing:
        raise TypeError(
            f"{type(encoder).__name__} is not a fitted encoder: it lacks "
            f"{', '.join(missing)} (see skmacro.encoders.Encoder; fit it first)"
        )
    return encoder


class _Link:
    """The encoder and source states of latent coordinates. Copies of a
    pandas ``DataFrame`` deep-copy its ``attrs``; the link is shared instead
    of copying the encoder and the states."""

    def __init__(self, encoder, source, index=None):
        self.encoder, self.source = encoder, source
        # A DataFrame's row labels at transform: pandas keeps ``attrs``
        # through reordering, which the states do not follow.
        self.index = index

    def __deepcopy__(self, memo):
        return self

    def __reduce__(self):
        # Pickled latent coordinates are plain data.
        return (type(None), ())


def latent_frame(Z, encoder, source, columns, index=None):
    """Latent coordinates as a pandas ``DataFrame`` that remembers its
    encoder and states (in ``attrs``), for ``set_output(transform="pandas")``.

    Parameters
    ----------
    Z : ndarray of shape (n_samples, d)
    encoder : Encoder
    source : array-like of shape (n_samples, N)
    columns : sequence of str
    index : pandas Index, optional

    Returns
    -------
    pandas.DataFrame
    """
    import pandas as pd

    frame = pd.DataFrame(np.asarray(Z), columns=list(columns), index=index)
    frame.attrs[LINK_KEY] = _Link(encoder, source, frame.index)
    return frame


class LatentArray(np.ndarray):
    """Latent coordinates that remember the encoder and the states they came
    from, so that :class:`~skmacro.PartialForceDynamics` can compute the
    encoder Jacobian at the same rows (this is how the encoder reaches the
    dynamics inside a ``Pipeline``).

    Row selections (``Z[rows]``) keep the link; any other derived array is a
    plain ``ndarray``.

    Attributes
    ----------
    encoder : Encoder
    source : array-like of shape (n_samples, n_features)
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
        if (
            self.source is None
            or not whole_rows
            or any(not (isinstance(c, slice) and c == slice(None)) for c in cols)
        ):
            return out.view(np.ndarray)
        out.encoder = self.encoder
        out.source = self.source[rows]
        return out

    def __reduce__(self):
        # Pickle as a plain array: the encoder link is a convenience for a
        # live pipeline, not data.
        return np.asarray(self).__reduce__()


def linked_encoder(Z, name="Z"):
    """The encoder and states behind latent coordinates.

    Parameters
    ----------
    Z : LatentArray or pandas.DataFrame
        Output of an encoder's ``transform`` (or a row selection of a
        :class:`LatentArray`).
    name : str, default="Z"
        Argument name used in error messages.

    Returns
    -------
    encoder : Encoder
    X : array-like of shape (n_samples, N)
        The states ``Z`` was computed from.

    Raises
    ------
    ValueError
        If ``Z`` carries no encoder, or its rows no longer match its states.
    """
    link = None
    if isinstance(Z, LatentArray) and Z.encoder is not None:
        link = _Link(Z.encoder, Z.source)
    elif isinstance(getattr(Z, "attrs", None), dict):
        link = Z.attrs.get(LINK_KEY)
    if link is None:
        raise ValueError(
            f"{name} carries no encoder: pass Z = ClosureAutoencoder.transform(X) "
            "(or fit a Pipeline([('ae', ...), ('dyn', ...)]) on X), so that the "
            "encoder Jacobian at the same states is available"
        )
    if n_rows(link.source) != n_rows(Z):
        raise ValueError(
            f"{name} has {n_rows(Z)} rows but its encoder saw {n_rows(link.source)} "
            "states: select rows of X before transform (a DataFrame's row "
            "selection does not carry the states along)"
        )
    index = getattr(link, "index", None)
    if index is not None and not Z.index.equals(index):
        raise ValueError(
            f"{name}'s rows were reordered after transform, and a DataFrame's "
            "reordering does not carry the states along: reorder X before "
            "transform"
        )
    return check_encoder(link.encoder), link.source
