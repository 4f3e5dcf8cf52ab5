"""The main job on the embedded default dataset (``make demo``).

1. prepare ``ml-latest-small`` (5-core, random 8:1:1, seed 2026);
2. encode item text and user preference profiles offline (packaged MiniLM, template profiles);
3. run the benchmark — RecGOAT beside MostPopular, BPR-MF, LightGCN and the multimodal peers (VBPR,
   LATTICE, FREEDOM, LGMRec, BM3, MGCN) that can be built from the dataset's features (all six with text
   alone) — and print the results table (with every model against LightGCN) and the HTML report's path.

    python -m recgoat.demo [--out demo-out] [--epochs 60] [--seeds 2026] [--models a,b,…] [--device cuda]

One seed by default to keep the demo short; ``--seeds 2026,2027,2028`` gives the mean ± std over seeds.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from pydantic import ValidationError
from rich.console import Console

from recgoat.config import first_validation_error
from recgoat.datasets import load
from recgoat.errors import ConfigError, RecGOATError, print_error
from recgoat.features.device import check_device
from recgoat.training.trainer import TrainConfig

console = Console(soft_wrap=True)  # a log or pipe gets 80 columns: lines are not broken there
BASELINES = ["mostpop", "bprmf", "lightgcn"]
PEERS = ["vbpr", "lattice", "freedom", "lgmrec", "bm3", "mgcn"]


def applicable_peers(dataset, features) -> tuple[list[str], dict[str, str]]:
    """The peers that can be built from ``features`` (each needs item text or images), and why the others
    cannot: the same check the model itself makes, not a list kept by hand."""
    from recgoat.models import get_model_class

    ok, skipped = [], {}
    for name in PEERS:
        try:
            get_model_class(name).dims_from(dataset, features)
            ok.append(name)
        except ConfigError as e:
            skipped[name] = str(e)
    return ok, skipped


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    # every option says what it does and its default (they had no help at all)
    ap.add_argument("--dataset", default="ml-latest-small", help="dataset name or folder (default: %(default)s)")
    ap.add_argument("--out", default="demo-out", help="output folder: features/ and benchmark/ "
                                                      "(default: %(default)s)")
    ap.add_argument("--epochs", type=int, default=60, help="maximum training epochs (default: %(default)s)")
    ap.add_argument("--patience", type=int, default=10, help="validations without improvement before "
                                                             "stopping (default: %(default)s)")
    ap.add_argument("--seeds", default="2026", help="comma-separated training seeds (default: %(default)s)")
    ap.add_argument("--lr", type=float, default=5e-3, help="learning rate (default: %(default)s)")
    ap.add_argument("--device", default="cpu", help="where the models train: cpu, cuda, cuda:1, mps; the encoders run "
                                                    "on the CPU (default: %(default)s)")
    ap.add_argument("--models", default=None, help="comma-separated (default: baselines, applicable "
                                                        "peers, recgoat)")
    args = ap.parse_args(argv)
    out = Path(args.out)
    t0 = time.perf_counter()
    try:
        # checked before the (minutes-long) encoding, each bad value as one line rather than a traceback
        try:
            seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
        except ValueError:
            raise ConfigError(f"--seeds: expected comma-separated integers, got {args.seeds!r}") from None
        from recgoat.benchmark.config import check_seeds

        try:
            check_seeds(seeds)
        except ValueError as e:
            raise ConfigError(f"--seeds: {e}") from None
        train = {"epochs": args.epochs, "patience": args.patience, "lr": args.lr, "device": args.device}
        try:
            TrainConfig(**train)
        except ValidationError as e:
            raise ConfigError(f"--{first_validation_error(e)}") from None
        check_device(args.device, name="--device", purpose="train on", fix="--device cpu")
        models = [m.strip() for m in args.models.split(",") if m.strip()] if args.models else None
        if models is not None:  # an unknown or repeated name was refused only after the encoding
            from recgoat.models import get_model_class

            try:
                if not models:
                    raise ConfigError(f"no model given in {args.models!r}")
                repeated = sorted({m for m in models if models.count(m) > 1})
                if repeated:
                    raise ConfigError(f"models repeat: {repeated}")
                for m in models:
                    get_model_class(m)
            except ConfigError as e:
                raise ConfigError(f"--models: {e}") from None
        ds = load(args.dataset)
        s = ds.stats()
        console.print(f"[bold]{ds.name}[/]: {s['users']} users, {s['items']} items, {s['interactions']} "
                      f"interactions, split {s['split']}")
        from recgoat.features import FeatureConfig, encode_all

        # bars only on a terminal: `make demo > demo.log` got every redraw of them
        progress = sys.stderr.isatty()
        feat_dir = encode_all(ds, out / "features" / ds.name, FeatureConfig(), progress=progress)
        console.print(f"features → {feat_dir}")
        from recgoat.benchmark.config import BenchmarkConfig
        from recgoat.benchmark.runner import run_benchmark
        from recgoat.features import load_features

        if models is None:
            peers, skipped = applicable_peers(ds, load_features(ds, feat_dir))
            for name, why in skipped.items():
                console.print(f"{name} left out: {why}")
            models = [*BASELINES, *peers, "recgoat"]
        console.print(f"models: {', '.join(models)}")
        try:
            cfg = BenchmarkConfig(
                datasets=[{"name": args.dataset, "features": str(feat_dir)}],
                models=[{"name": m} for m in models],
                seeds=seeds,
                train=train,
                out=out / "benchmark",
                progress=progress,
                # every model against LightGCN (relative difference, Holm-adjusted paired test), when it runs
                baseline="lightgcn" if "lightgcn" in models and len(models) > 1 else None,
            )
        except ValidationError as e:
            raise ConfigError(first_validation_error(e)) from None
        run = run_benchmark(cfg)
    except RecGOATError as e:
        # as the commands print it (a folder like data/[bold]x keeps its brackets), on stderr: `make demo >
        # demo.log` kept the error out of sight in the log otherwise
        print_error(str(e))
        return 1
    except KeyboardInterrupt:
        # encoding and the benchmark write through temp files and resume: say so instead of a traceback
        print("interrupted; finished work is kept (run the demo again to resume)", file=sys.stderr)
        return 130
    print(run.report["md"].read_text())  # plain print: a console would wrap the table rows at its width
    print(f"HTML report: {run.report['html'].resolve()}")
    print(f"demo finished in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
