"""Models, one file each; importing this package registers them all by name."""
from recgoat.models.base import MODELS, ModelConfig, Recommender, get_model_class, register
from recgoat.models.bprmf import BPRMF
from recgoat.models.lightgcn import LightGCN
from recgoat.models.mostpop import MostPop

__all__ = ["MODELS", "ModelConfig", "Recommender", "get_model_class", "register",
           "BPRMF", "LightGCN", "MostPop"]
