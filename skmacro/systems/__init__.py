"""Microscopic systems: states, (partial) forces, observables and simulators."""

from ._base import System
from .allen_cahn import AllenCahn
from .lennard_jones import LennardJones
from .predator_prey import PredatorPrey

__all__ = ["System", "AllenCahn", "LennardJones", "PredatorPrey"]
