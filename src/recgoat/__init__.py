"""recgoat: LLM-enhanced multimodal recommendation (RecGOAT) and its peers on one fast, honest harness."""
__version__ = "0.1.0"
