"""A two-layer perceptron, the feed-forward half of every Transformer block."""

from __future__ import annotations

from torch import Tensor, nn


class MLP(nn.Module):
    """``fc1 -> activation -> dropout -> fc2 -> dropout`` on the last dimension.

    Args:
        in_dim: Input feature size.
        hidden_dim: Size of the hidden layer.
        out_dim: Output feature size (default: ``in_dim``).
        dropout: Dropout after the activation and after ``fc2``.
        activation: Activation module class, instantiated without arguments.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int | None = None, dropout: float = 0.0,
                 activation: type[nn.Module] = nn.GELU):
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden_dim)
        self.act = activation()
        self.fc2 = nn.Linear(hidden_dim, out_dim or in_dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        x = self.drop(self.act(self.fc1(x)))  # (..., hidden_dim)
        return self.drop(self.fc2(x))         # (..., out_dim)
