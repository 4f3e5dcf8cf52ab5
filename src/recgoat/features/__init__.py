"""RecGOAT's first stage (METHOD.md §1): item text, item image and user-profile embeddings, cached.

``encode_all(dataset, out_dir, FeatureConfig(...))`` writes ``{text,image,profile}.npy`` with JSON
manifests (and ``image_mask.npy``, ``profiles.jsonl``); ``load_features(dataset, folder)`` reads them back,
validated against the dataset. Everything runs offline by default (packaged MiniLM and EfficientNet-Lite0
weights, template-made profiles) and scales to real LLMs through the ``openai`` / ``transformers`` backends.
"""
from recgoat.features.loading import Features, load_features
from recgoat.features.mmrec_io import export_mmrec, import_mmrec
from recgoat.features.store import FeatureConfig, encode_all

__all__ = ["FeatureConfig", "Features", "encode_all", "export_mmrec", "import_mmrec", "load_features"]
