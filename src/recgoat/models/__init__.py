"""Models, one file each; importing this package registers them all by name."""
from recgoat.models.base import MODELS, ModelConfig, Recommender, get_model_class, register
from recgoat.models.bprmf import BPRMF
from recgoat.models.lightgcn import LightGCN
from recgoat.models.mostpop import MostPop
from recgoat.models.recgoat import RecGOAT
from recgoat.models.vbpr import VBPR  # peers, METHOD.md §8
from recgoat.models.freedom import FREEDOM
from recgoat.models.lgmrec import LGMRec
from recgoat.models.bm3 import BM3
from recgoat.models.lattice import LATTICE
from recgoat.models.mgcn import MGCN

__all__ = ["MODELS", "ModelConfig", "Recommender", "get_model_class", "register",
           "BPRMF", "LightGCN", "MostPop", "RecGOAT", "VBPR", "FREEDOM", "LGMRec", "BM3", "LATTICE", "MGCN"]
