"""Torch modules (no scikit-learn): MLPs, the closure autoencoder and latent
vector fields."""

from .autoencoder import ClosureAutoencoderModule
from .mlp import MLP
from .scaling import ScaledVectorField

__all__ = ["MLP", "ClosureAutoencoderModule", "ScaledVectorField"]
