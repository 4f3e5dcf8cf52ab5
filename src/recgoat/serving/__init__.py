"""Serving a trained run: exported artefacts, faiss retrieval, a FastAPI service and a web page.

``export_run`` writes a checksummed artefact folder, ``load_run`` reads it back, ``ItemIndex`` does the
top-K retrieval and ``create_app`` builds the service (``python -m recgoat.serving ARTEFACT``).
"""
from recgoat.serving.artifacts import ARTIFACT_FORMAT_VERSION, Run, export_run, load_run, verify
from recgoat.serving.retrieval import INDEX_KINDS, ItemIndex, brute_force_topk, recall_vs_exact


def create_app(run, index: str = "flat"):
    """The FastAPI app (imported lazily: FastAPI is only needed to serve)."""
    from recgoat.serving.app import create_app as _create

    return _create(run, index)


__all__ = ["ARTIFACT_FORMAT_VERSION", "INDEX_KINDS", "ItemIndex", "Run", "brute_force_topk", "create_app",
           "export_run", "load_run", "recall_vs_exact", "verify"]
