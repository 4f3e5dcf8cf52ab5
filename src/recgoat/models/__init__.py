"""Models, one file each; importing this package registers them all by name."""
from recgoat.models.base import MODELS, ModelConfig, Recommender, get_model_class, register
from recgoat.models.bprmf import BPRMF
from recgoat.models.lightgcn import LightGCN
from recgoat.models.mostpop import MostPop
from recgoat.models.recgoat import RecGOAT
from recgoat.models.vbpr import VBPR  # noqa: F401  (peers, METHOD.md §8)
from recgoat.models.freedom import FREEDOM  # noqa: F401
from recgoat.models.lgmrec import LGMRec  # noqa: F401
from recgoat.models.bm3 import BM3  # noqa: F401

__all__ = ["MODELS", "ModelConfig", "Recommender", "get_model_class", "register",
           "BPRMF", "LightGCN", "MostPop", "RecGOAT"]
