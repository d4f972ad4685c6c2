"""A Jacobian batch held densely, shared by the tests of encoders that are
not the library's own."""

import torch


class DenseJacobian:
    """Jacobians held densely, (batch, d, N): the simplest JacobianBatch."""

    def __init__(self, J):
        self.J = J

    def to(self, *args, **kwargs):
        return DenseJacobian(self.J.to(*args, **kwargs))

    def columns(self, index):
        return torch.gather(
            self.J, 2, index[:, None, :].expand(-1, self.J.shape[1], -1)
        )

    def matvec(self, v):
        return torch.einsum("bdn,bn->bd", self.J, v)

    def gram(self):
        return self.J @ self.J.transpose(1, 2)
