"""Torch modules (no scikit-learn): MLPs, the closure autoencoder, the
particle-set closure and latent vector fields."""

from .autoencoder import ClosureAutoencoderModule
from .mlp import MLP
from .particle import ParticleSetClosure, ParticleSetJacobian
from .scaling import ScaledVectorField
from .vector_fields import (
    GFINN,
    LATENT_MODELS,
    MLPVectorField,
    OnsagerNet,
    resolve_latent_model,
)

__all__ = [
    "MLP",
    "ClosureAutoencoderModule",
    "ParticleSetClosure",
    "ParticleSetJacobian",
    "ScaledVectorField",
    "MLPVectorField",
    "OnsagerNet",
    "GFINN",
    "LATENT_MODELS",
    "resolve_latent_model",
]
