"""Plain multilayer perceptrons: the building block of every skmacro network."""

from torch import nn

from .._validation import check_choice

ACTIVATIONS = {
    "tanh": nn.Tanh,
    "softplus": nn.Softplus,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "elu": nn.ELU,
}


def make_activation(name):
    """Return a fresh activation module for ``name`` (see ``ACTIVATIONS``)."""
    return ACTIVATIONS[check_choice("activation", name, ACTIVATIONS)]()


class MLP(nn.Sequential):
    """Fully connected network from ``in_features`` through the ``hidden`` widths
    to ``out_features``.

    Parameters
    ----------
    in_features : int
    out_features : int
    hidden : sequence of int, default=(64, 64)
        Widths of the hidden layers.
    activation : str, default="tanh"
        One of ``ACTIVATIONS``; applied after every hidden layer.

    Shapes: input (batch, in_features), output (batch, out_features).
    """

    def __init__(self, in_features, out_features, hidden=(64, 64), activation="tanh"):
        layers = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, int(h)), make_activation(activation)]
            width = int(h)
        layers.append(nn.Linear(width, out_features))
        super().__init__(*layers)
