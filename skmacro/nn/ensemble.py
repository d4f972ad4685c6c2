"""Several independent latent vector fields evaluated as one module."""

import torch
from torch import nn


class VectorFieldEnsemble(nn.Module):
    """``k`` independent vector fields (the members of an ensemble).

    Each member keeps its own weights and its own structure: a member that
    is an :class:`~skmacro.nn.OnsagerNet` dissipates its own potential, a
    :class:`~skmacro.nn.GFINN` keeps its own GENERIC laws. The members are
    evaluated one after the other on their own rows (each member may see
    different rows, e.g. its own mini-batch or its own rollout), so any
    ``(batch, d) -> (batch, d)`` module can be a member, including those
    that differentiate a learned scalar inside ``forward``.

    Parameters
    ----------
    members : sequence of torch.nn.Module
        ``k >= 1`` modules mapping (batch, d) to (batch, d).

    Shapes: input (batch, d), given to every member, or (k, batch, d), row
    ``z[m]`` to member ``m``; output (k, batch, d).

    Examples
    --------
    >>> import torch
    >>> from skmacro.nn import MLPVectorField
    >>> ensemble = VectorFieldEnsemble([MLPVectorField(3) for _ in range(4)])
    >>> ensemble(torch.zeros(5, 3)).shape
    torch.Size([4, 5, 3])
    """

    def __init__(self, members):
        super().__init__()
        members = list(members)
        if not members:
            raise ValueError("VectorFieldEnsemble needs at least one member")
        self.members = nn.ModuleList(members)

    def __len__(self):
        return len(self.members)

    def member(self, m):
        """The vector field of member ``m``, a module mapping (batch, d) to
        (batch, d) (the member itself, not a copy)."""
        return self.members[m]

    def forward(self, z):
        """Every member's ``dz/dt``: (k, batch, d) from ``z`` of shape
        (batch, d) or (k, batch, d)."""
        if z.dim() == 2:
            return torch.stack([field(z) for field in self.members])
        if z.dim() != 3 or z.shape[0] != len(self.members):
            raise ValueError(
                f"expected z of shape (batch, d) or ({len(self.members)}, batch, "
                f"d), got {tuple(z.shape)}"
            )
        return torch.stack(
            [field(rows) for field, rows in zip(self.members, z, strict=True)]
        )

    def extra_repr(self):
        return f"n_members={len(self.members)}"
