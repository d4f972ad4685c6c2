"""Torch modules (no scikit-learn): MLPs, closure networks (the MLP closure
and the particle-set closure), the closure autoencoder, losses and latent
vector fields."""

from .autoencoder import ClosureAutoencoderModule, EncoderJacobian, condition_number
from .closures import MLPClosure, MLPJacobian
from .ensemble import VectorFieldEnsemble
from .losses import ClosureAutoencoderLoss, QuadraticFormLoss
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
    "MLPClosure",
    "MLPJacobian",
    "ClosureAutoencoderModule",
    "EncoderJacobian",
    "ClosureAutoencoderLoss",
    "QuadraticFormLoss",
    "ParticleSetClosure",
    "ParticleSetJacobian",
    "ScaledVectorField",
    "VectorFieldEnsemble",
    "MLPVectorField",
    "OnsagerNet",
    "GFINN",
    "LATENT_MODELS",
    "condition_number",
    "resolve_latent_model",
]
