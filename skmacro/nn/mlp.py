"""Multilayer perceptrons: the building block of every skmacro network."""

import itertools

import torch
from torch import nn

from .._validation import check_choice


class ReQUr(nn.Module):
    """Regularised rectified quadratic unit, ``relu(x)² - relu(x - ½)²``.

    Zero for ``x ≤ 0``, ``x²`` up to ``½``, then linear with slope one; its
    derivative is continuous. This is the activation of Yu et al.'s
    OnsagerNet ("ReQUr"). Near zero it is quadratic, so a network with small
    weights starts close to its linear part.

    Shapes: elementwise, output of the input's shape.
    """

    def forward(self, x):
        return torch.relu(x).square() - torch.relu(x - 0.5).square()


ACTIVATIONS = {
    "tanh": nn.Tanh,
    "softplus": nn.Softplus,
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "elu": nn.ELU,
    "requr": ReQUr,
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


class ResidualTrunk(nn.Module):
    """The hidden layers of an MLP, without its output layer, with a skip
    connection around every layer after the first whose input and output
    widths agree.

    ``h_1 = act(W_1 z + b_1)``, then ``h_k = act(W_k h_{k-1} + b_k) + h_{k-1}``
    where the widths match (``act(W_k h_{k-1} + b_k)`` otherwise). Several
    heads can read the same features: OnsagerNet's shared layout does.

    Parameters
    ----------
    in_features : int
    hidden : sequence of int, default=(64, 64)
        Widths of the layers; the output width is the last one.
    activation : str, default="tanh"
        One of ``ACTIVATIONS``.

    Shapes: input (batch, in_features), output (batch, hidden[-1]).
    """

    def __init__(self, in_features, hidden=(64, 64), activation="tanh"):
        super().__init__()
        widths = [int(in_features), *(int(h) for h in hidden)]
        if len(widths) < 2:
            raise ValueError(
                f"hidden must list at least one layer width, got {hidden!r}"
            )
        self.layers = nn.ModuleList(
            nn.Linear(a, b) for a, b in itertools.pairwise(widths)
        )
        self.activation = make_activation(activation)
        self.out_features = widths[-1]

    def forward(self, x):
        for k, layer in enumerate(self.layers):
            y = self.activation(layer(x))
            x = y + x if k and y.shape[-1] == x.shape[-1] else y
        return x
