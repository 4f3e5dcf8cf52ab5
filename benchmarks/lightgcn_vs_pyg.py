"""Our LightGCN's training step against PyTorch Geometric's ``torch_geometric.nn.models.LightGCN``, at Amazon
Baby size (synthetic, as ``lightgcn_epoch.py``), d = 64, 3 layers, batch 2048, BPR + L2 1e-4, Adam.

PyG's model propagates by message passing: over an ``edge_index`` (a scatter of E × d messages per layer), or
over a sparse CSR adjacency (``to_torch_csr_tensor``), whose backward transposes the matrix on every call. Ours
multiplies by the symmetric-normalised CSR adjacency and reuses it for the backward (``graphs/bipartite.py``:
``sym_spmm``). The steps alternate round by round on the same batches, so this machine's speed drifts hit all
three alike; the median ms per step and the ratio to ours are printed.

Run: ``python benchmarks/lightgcn_vs_pyg.py [--threads 1] [--rounds 5]``
"""
from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import torch
from torch_geometric.nn.models import LightGCN as PygLightGCN
from torch_geometric.utils import to_torch_csr_tensor

from _baby import baby_like
from recgoat.models.lightgcn import LightGCN
from recgoat.training.sampling import NegativeSampler


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--batches", type=int, default=6)
    args = ap.parse_args()
    warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
    torch.set_num_threads(args.threads)
    ds = baby_like()
    n_u, n_i = ds.n_users, ds.n_items
    coo = ds.csr("train").tocoo()
    u, i = torch.from_numpy(coo.row).long(), torch.from_numpy(coo.col).long() + n_u
    edge_index = torch.stack([torch.cat([u, i]), torch.cat([i, u])])
    adjacency = to_torch_csr_tensor(edge_index, size=(n_u + n_i, n_u + n_i))

    torch.manual_seed(0)
    ours = LightGCN.build(ds, {"embedding_dim": 64, "n_layers": 3, "reg_weight": 1e-4})
    pyg = PygLightGCN(n_u + n_i, 64, 3)
    opts = {"ours": torch.optim.Adam(ours.parameters(), lr=1e-3), "pyg": torch.optim.Adam(pyg.parameters(), lr=1e-3)}
    it = NegativeSampler(ds.csr("train")).epoch(2048, np.random.default_rng(0))
    batches = [tuple(torch.as_tensor(x) for x in next(it)) for _ in range(args.batches)]

    def step_ours(users, pos, neg) -> None:
        loss = ours.loss(users, pos, neg)["loss"]
        opts["ours"].zero_grad()
        loss.backward()
        opts["ours"].step()

    def step_pyg(graph, users, pos, neg) -> None:
        pos, neg = pos + n_u, neg + n_u
        emb = pyg.get_embedding(graph)
        loss = pyg.recommendation_loss((emb[users] * emb[pos]).sum(-1), (emb[users] * emb[neg]).sum(-1),
                                       node_id=torch.cat([users, pos, neg]), lambda_reg=1e-4)
        opts["pyg"].zero_grad()
        loss.backward()
        opts["pyg"].step()

    steps = {"recgoat LightGCN (CSR, symmetric backward)": step_ours,
             "PyG LightGCN over edge_index": lambda *b: step_pyg(edge_index, *b),
             "PyG LightGCN over a torch CSR adjacency": lambda *b: step_pyg(adjacency, *b)}
    ours.train()
    for f in steps.values():  # warm-up
        f(*batches[0])
    times: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(args.rounds):
        for b in batches:
            for k, f in steps.items():
                t = time.perf_counter()
                f(*b)
                times[k].append(time.perf_counter() - t)
    base = float(np.median(times["recgoat LightGCN (CSR, symmetric backward)"]))
    print(f"Baby size: {n_u:,} users, {n_i:,} items, {ds.csr('train').nnz:,} training edges; d 64, 3 layers, "
          f"batch 2048, {args.threads} thread(s), median of {len(next(iter(times.values())))} steps")
    for k, ts in times.items():
        m = float(np.median(ts))
        print(f"{k:44s} {1e3 * m:8.1f} ms/step  {m / base:5.2f}×")


if __name__ == "__main__":
    main()
