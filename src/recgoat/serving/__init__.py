"""Serving a trained run: exported artefacts, faiss retrieval, a FastAPI service and a web page.

``export_run`` writes a checksummed artefact folder from a model and dataset in hand, ``export_run_dir`` from a
run folder (as ``recgoat export``: with the dataset and features the run recorded, checked), ``load_run`` reads
it back, ``ItemIndex`` does the top-K retrieval and ``create_app`` builds the service
(``python -m recgoat.serving ARTEFACT``).
"""
from recgoat.serving.artifacts import ARTIFACT_FORMAT_VERSION, Run, export_run, load_run, verify
from recgoat.serving.export import RunExport, export_run_dir
from recgoat.serving.retrieval import INDEX_KINDS, ItemIndex, brute_force_topk, recall_vs_exact


def create_app(run, index: str = "flat"):
    """The FastAPI app (imported lazily: FastAPI is only needed to serve)."""
    from recgoat.serving.app import create_app as _create

    return _create(run, index)


__all__ = ["ARTIFACT_FORMAT_VERSION", "INDEX_KINDS", "ItemIndex", "Run", "RunExport", "brute_force_topk",
           "create_app", "export_run", "export_run_dir", "load_run", "recall_vs_exact", "verify"]
