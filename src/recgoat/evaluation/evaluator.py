"""Full-ranking evaluation over all items.

Embeddings are computed once per evaluation (``model.embeddings()``), then users are scored in chunks:
``S = Z_U[chunk] Z_I^T`` and training items (and validation items when scoring test) are set to −∞.
MMRec masks only training items at test time (a validation item stays a candidate that is never a hit),
which gives lower test figures; ``for_split(..., test_mask="train")`` (``recgoat evaluate --test-mask
train``) scores that way, for comparison with numbers published under MMRec's protocol.
Three exact ways then turn a chunk of scores into the ranked hit matrix the metrics need
(``selection=``):

- ``"count"`` (default): the rank of each held-out item is the number of unmasked items scoring at least
  as high, ``r(u, i) = |{j : s_uj ≥ s_ui}| − 1`` — one comparison pass over the row per held-out item. The
  metrics only need the ranks of the held-out items, and held-out sets are small (about one item per user
  on Amazon data), so this is cheaper than selecting the top K of 7,050 scores: about 1.4× faster than the
  faiss heaps below at Amazon Baby size (``benchmarks/eval_speed.py``). **Ties are pessimistic**: an item
  scoring exactly as high as a held-out item is ranked ahead of it, so a model that scores every item alike
  gets zero, not whatever an arbitrary tie order happens to give. Tied held-out items of one user take
  consecutive ranks at the end of their tie group.
- ``"faiss"``: faiss's k-selection heaps (``float_minheap_array_t.addn``, the routine behind faiss's exact
  search) pick each row's top K; about 1.3–1.5× faster than ``torch.topk`` here.
- ``"torch"``: ``torch.topk``.

Without ties all three give identical metrics (tested). With ties the two top-K selections order them
arbitrarily.

A NaN score is no ranking: it counts against the model like a tie, so before the selection NaN becomes +∞
(a NaN held-out item is never a hit, any other NaN item ranks above every held-out one). Without this the
three selections disagreed: counting and faiss skipped NaN items (a model scoring 8 of 10 items NaN had
Recall@2 = 1) while ``torch.topk`` ranked them first. The pass over the scores runs only when the
embeddings are not finite or large enough for their products to overflow.

A K larger than the catalogue (K = 50 of 40 items) ranks every item; the slots past the last item are
empty, never hits, as are those left by masked items: Recall, Hit, NDCG and MAP equal their values at
K = number of items, Precision still divides by K.

Scores are float32 products whatever the embeddings' dtype, as the models' ``final_embeddings`` and the
serving index score: float64 embeddings are rounded first, so two items whose float64 scores differ only
below float32's precision tie (against the model, when counting), and a product beyond float32's range is
+∞ (ranked like NaN above).

What does not change between epochs is computed once, in the constructor: each chunk's user ids, the flat
positions ``row·I + item`` of its masked pairs and of its held-out pairs. One score buffer and one flag
buffer are reused across chunks, because allocating a fresh multi-megabyte tensor per chunk costs page
faults comparable to the matrix product itself at d = 64.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import faiss
import numpy as np
import scipy.sparse as sp
import torch

from recgoat.datasets.dataset import Dataset
from recgoat.evaluation.metrics import metrics_from_hits
from recgoat.evaluation.ranking import SAFE_SCORE_BOUND, score_bound
from recgoat.strict import is_int

DEFAULT_KS = (5, 10, 20, 50)
Selection = Literal["count", "faiss", "torch"]  # how a chunk of scores becomes ranked hits (module docstring)
TestMask = Literal["train+valid", "train"]
TEST_MASKS: tuple[str, ...] = ("train+valid", "train")
SELECTIONS: tuple[str, ...] = get_args(Selection)


def _pairs(m) -> sp.csr_matrix:
    """A copy of ``m`` as canonical CSR holding one entry per (user, item) pair with a nonzero value.

    Relevance is binary and a pair is held out (or masked) once: a CSR built from raw index arrays may
    repeat a column in a row (a held-out item listed twice counted as two relevant items, and the
    counting selection then ranked the item against itself and scored it as two hits), and an explicitly
    stored 0 is no interaction (it counted as a held-out item that could never be found). Copied, so the
    caller's matrix is left as it was.
    """
    m = sp.csr_matrix(m, copy=True)
    m.sum_duplicates()
    m.eliminate_zeros()
    return m


@dataclass
class EvalResult:
    """Mean metrics plus the per-user values they average (for paired significance tests)."""

    means: dict[str, float]
    per_user: dict[str, np.ndarray]
    users: np.ndarray  # internal ids of the evaluated users (those with held-out items)


class Evaluator:
    """Scores every user against every item and reports top-K metrics on one held-out split."""

    def __init__(self, mask: sp.csr_matrix, target: sp.csr_matrix, ks: tuple[int, ...] = DEFAULT_KS,
                 chunk_size: int = 256, selection: Selection = "count"):
        if mask.shape != target.shape:
            raise ValueError("mask and target matrices differ in shape")
        self.mask = _pairs(mask)
        self.target = _pairs(target)
        # integers only: K = 2.5 or "5" failed later in indexing, a bool passed as K = 1
        if not ks or any(not is_int(k) or k < 1 for k in ks):
            raise ValueError(f"ks must be a non-empty list of integer cut-offs >= 1, got {list(ks)}")
        self.ks = tuple(sorted(int(k) for k in ks))
        if isinstance(chunk_size, bool) or int(chunk_size) != chunk_size or chunk_size < 1:
            raise ValueError(f"chunk_size must be an integer >= 1, got {chunk_size!r}")
        self.chunk_size = int(chunk_size)
        if selection not in SELECTIONS:
            raise ValueError(f"selection must be one of {', '.join(map(repr, SELECTIONS))}, got {selection!r}")
        self.selection = selection
        n_rel = np.diff(self.target.indptr)
        self.users = np.flatnonzero(n_rel > 0)
        self.n_relevant = torch.from_numpy(n_rel[self.users])
        self._blocks = self._make_blocks()

    def _make_blocks(self) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Per chunk: user ids, flat positions of masked pairs and of held-out pairs in a ``B × I`` block."""
        n_items = self.mask.shape[1]
        blocks = []
        for start in range(0, len(self.users), self.chunk_size):
            users = self.users[start:start + self.chunk_size]
            flat = []
            for m in (self.mask, self.target):
                sub = m[users]
                rows = np.repeat(np.arange(len(users), dtype=np.int64), np.diff(sub.indptr))
                flat.append(torch.from_numpy(rows * n_items + sub.indices.astype(np.int64)))
            blocks.append((torch.from_numpy(users.astype(np.int64)), flat[0], flat[1]))
        return blocks

    @classmethod
    def for_split(cls, dataset: Dataset, split: str = "valid", ks: tuple[int, ...] = DEFAULT_KS,
                  chunk_size: int = 256, selection: Selection = "count",
                  test_mask: TestMask = "train+valid") -> "Evaluator":
        """Validation masks training items; test masks training and validation items (``test_mask=
        "train"``: training items only, MMRec's convention, where a validation item stays a candidate that
        is never a hit; its test figures are lower, ~5–17 % on ml100k-mm, docs/benchmarks.md)."""
        if test_mask not in TEST_MASKS:
            raise ValueError(f"test_mask must be one of {TEST_MASKS}, got {test_mask!r}")
        mask = dataset.csr("train")
        if split == "test" and test_mask == "train+valid":
            mask = (mask + dataset.csr("valid")).tocsr()
            mask.data[:] = 1.0
        return cls(mask, dataset.csr(split), ks, chunk_size, selection)

    @torch.no_grad()
    def evaluate_embeddings(self, user_emb: torch.Tensor, item_emb: torch.Tensor) -> EvalResult:
        n_items = item_emb.shape[0]
        if n_items != self.mask.shape[1]:
            raise ValueError(f"item embeddings have {n_items} rows, the evaluator expects {self.mask.shape[1]}")
        if user_emb.shape[0] != self.mask.shape[0]:  # else the wrong rows were silently scored
            raise ValueError(f"user embeddings have {user_emb.shape[0]} rows, the evaluator expects "
                             f"{self.mask.shape[0]}")
        max_k = min(max(self.ks), n_items)
        # scored on the CPU (its buffers are numpy's, for faiss): a model trained on a GPU hands its embeddings over
        user_emb, item_t = user_emb.detach().float().cpu(), item_emb.detach().float().cpu().t()
        may_nan = not score_bound(user_emb.numpy(), item_t.numpy().T) < SAFE_SCORE_BOUND
        rows = min(self.chunk_size, len(self.users))
        scores_np = np.empty(rows * n_items, dtype=np.float32)  # numpy-owned so faiss can read it in place
        scores_buf = torch.from_numpy(scores_np)
        if self.selection != "count":  # buffers of the top-K selections
            rel_buf = torch.zeros(rows * n_items, dtype=torch.bool)
            top_val = np.empty((rows, max_k), dtype=np.float32)
            top_idx = np.empty((rows, max_k), dtype=np.int64)
        threads = faiss.omp_get_max_threads()
        if self.selection == "faiss":  # faiss's heaps follow torch's thread setting
            faiss.omp_set_num_threads(torch.get_num_threads())
        hits_all = []
        try:
            for users, masked, relevant in self._blocks:
                b = len(users)
                scores = scores_buf[: b * n_items].view(b, n_items)
                torch.mm(user_emb[users], item_t, out=scores)
                hittable = relevant  # the held-out pairs a top-K selection may count as hits
                if may_nan:  # NaN ranks against the model (module docstring); before masking, so masked stay −∞
                    hittable = relevant[scores.view(-1)[relevant].isfinite()]
                    scores.nan_to_num_(nan=torch.inf, posinf=torch.inf, neginf=-torch.inf)
                scores.view(-1).index_fill_(0, masked, -torch.inf)
                if self.selection == "count":  # counting never hits a non-finite held-out score itself
                    hits_all.append(self._hits_by_count(scores, relevant, max_k))
                    continue
                if self.selection == "faiss":
                    top = torch.from_numpy(self._faiss_topk(scores_np, b, n_items, top_val, top_idx))
                else:
                    val, top = torch.topk(scores, max_k, dim=1, sorted=True)
                    # as faiss: a masked (−∞) item fills no slot, else a masked held-out item in a row with
                    # fewer than K unmasked items was picked and counted as a hit
                    top = top.masked_fill(val == -torch.inf, -1)
                rel = rel_buf[: b * n_items]
                rel.index_fill_(0, hittable, True)
                # a slot left empty (-1: fewer than K unmasked items) is never a hit
                hits_all.append(rel.view(b, n_items).gather(1, top.clamp(min=0)) & (top >= 0))
                rel.index_fill_(0, hittable, False)  # leave the buffer clean for the next chunk
        finally:
            faiss.omp_set_num_threads(threads)
        hits = torch.cat(hits_all) if hits_all else torch.zeros(0, max_k, dtype=torch.bool)
        # K beyond the catalogue: every item is ranked, the slots after it are empty (read as such, not padded)
        per_user = metrics_from_hits(hits, self.n_relevant, self.ks, empty_after=True)
        means = {k: float(v.mean()) if len(v) else float("nan") for k, v in per_user.items()}
        return EvalResult(means, {k: v.numpy() for k, v in per_user.items()}, self.users)

    @staticmethod
    def _hits_by_count(scores: torch.Tensor, relevant: torch.Tensor, max_k: int) -> torch.Tensor:
        """Ranked ``[b, max_k]`` hits of one chunk from the held-out items' ranks (pessimistic on ties).

        ``relevant`` holds the flat positions ``row·I + item`` of the chunk's held-out pairs, sorted, and
        every row has at least one: the first pair of each row is compared against the score block in
        place; the rest (users with several held-out items) against gathered copies of their rows, at most
        ``b`` rows at a time.
        """
        b, n_items = scores.shape
        rows = torch.div(relevant, n_items, rounding_mode="floor")
        t = scores.view(-1)[relevant]
        first = torch.ones(len(rows), dtype=torch.bool)
        first[1:] = rows[1:] != rows[:-1]
        at_least = torch.empty(len(rows), dtype=torch.int32)
        # int32 sums are ~1.8× faster than the default int64 here; a row has < 2^31 items
        at_least[first] = (scores >= t[first, None]).sum(1, dtype=torch.int32)
        # the rest, ``b`` rows at a time, so the gathered copy never outgrows the score block
        rest = (~first).nonzero().squeeze(1)
        for part in rest.split(b):
            at_least[part] = (scores[rows[part]] >= t[part, None]).sum(1, dtype=torch.int32)
        rank = at_least.long() - 1
        # held-out items tied with each other all counted each other: spread them over their tie group's
        # last places (relevant is sorted by row, so a stable sort by (row, count) keeps rows together)
        key = rows * (n_items + 1) + at_least.long()
        order = torch.sort(key, stable=True).indices
        k_sorted = key[order]
        pos = torch.arange(len(order))
        run_end = torch.searchsorted(k_sorted, k_sorted, right=True) - 1
        rank[order] -= run_end - pos
        hit = torch.isfinite(t) & (rank < max_k)  # a masked (−∞) or NaN held-out item is never a hit
        hits = torch.zeros(b, max_k, dtype=torch.bool)
        hits[rows[hit], rank[hit]] = True
        return hits

    @staticmethod
    def _faiss_topk(scores: np.ndarray, b: int, n_items: int, val: np.ndarray, idx: np.ndarray) -> np.ndarray:
        """Indices of each row's K largest scores, best first; -1 where a row has fewer than K finite scores."""
        heaps = faiss.float_minheap_array_t()  # a min-heap keeps the K largest
        heaps.nh, heaps.k = b, val.shape[1]
        heaps.val, heaps.ids = faiss.swig_ptr(val), faiss.swig_ptr(idx)
        heaps.heapify()
        # faiss's empty slot holds -FLT_MAX and takes only larger scores, so a finite score of exactly -FLT_MAX
        # (reachable on the overflow path) was never picked while counting ranked it; −∞ (masked) still never is
        val[:b] = -np.inf
        heaps.addn(n_items, faiss.swig_ptr(scores), 0, 0, b)
        heaps.reorder()
        return idx[:b].copy()

    def evaluate(self, model) -> EvalResult:
        """Evaluate any model of the shared API: embeddings once, in eval mode (dropout off)."""
        user_emb, item_emb = model.final_embeddings()
        return self.evaluate_embeddings(user_emb, item_emb)
