"""``recgoat benchmark``: run datasets × models × seeds from a YAML config and/or options.

Examples::

    recgoat benchmark --config src/recgoat/configs/benchmark-default.yaml
    recgoat benchmark --dataset ml-latest-small --models mostpop,bprmf,lightgcn --seeds 2026,2027 \\
        --epochs 50 --out runs/bench --set train.lr=0.005 --set models.lightgcn.params.n_layers=2

Options override the file; ``--set key=value`` (dotted, repeatable) overrides anything, list entries
being chosen by label (``models.<label>...``, ``datasets.<label>...``). Re-running the same command
resumes: finished cells are read back, an interrupted one continues from its checkpoint.
``--report-only`` rebuilds the report without training, and refuses (writing nothing) unless every
requested cell is finished and was run with the requested configuration; given only ``--out`` (no --config,
--dataset/--models), it reports the configuration the folder's ``benchmark.json`` records, other options and
``--set`` applying on top. ``--print-config`` prints the configuration the command would run (or report) as commented
YAML for ``--config``, and exits.
"""
from __future__ import annotations

import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional

import typer

from recgoat.errors import RecGOATError, print_error

app = typer.Typer(help="Benchmark models over datasets and seeds; writes results.csv/.md/.tex and report.html.",
                  add_completion=False)


def _split(text: str | None) -> list[str] | None:
    if text is None:
        return None
    return [t.strip() for t in text.split(",") if t.strip()]


def _joined(items: list[str] | None) -> list[str] | None:
    """A repeatable, comma-separated option's values, every occurrence's in order; None when it was not given."""
    if not items:
        return None
    return [t for item in items for t in _split(item)]


def _seed(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise RecGOATError(f"--seeds expects integers (repeatable or comma-separated), got {text!r}") from None


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (what ``timeout``, ``kill`` and job schedulers send) stops the run as Ctrl-C does: the cells stop,
    the workers of ``-j N`` with them (SIGTERM's default killed this process alone, its workers training on into
    a folder whose lock was gone), finished work is kept and the command exits 130."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set a handler
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@app.command("benchmark")
def benchmark(
    config: Optional[Path] = typer.Option(None, "--config", "-c", help="benchmark YAML file"),
    dataset: Optional[list[str]] = typer.Option(
        None, "--dataset", "-d", help="dataset name or folder (repeatable or comma-separated); with --config, a "
                                      "dataset the file lists keeps its settings there"),
    models: Optional[list[str]] = typer.Option(
        None, "--models", "-m", help="model name (repeatable or comma-separated); with --config, the file's entries "
                                     "by label or name (keeping their params; a grid's name brings every point of "
                                     "it)"),
    seeds: Optional[list[str]] = typer.Option(
        None, "--seeds", "-s", help="seed (repeatable or comma-separated), e.g. -s 2026,2027 or -s 2026 -s 2027"),
    epochs: Optional[int] = typer.Option(None, "--epochs", help="maximum training epochs"),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="output folder"),
    set_: Optional[list[str]] = typer.Option(None, "--set", help="override key=value (dotted; repeatable), e.g. train.lr=5e-3 or "
                                                             "models.lightgcn.params.n_layers=2 (a model's params: "
                                                             "recgoat models show MODEL)"),
    report_only: bool = typer.Option(False, "--report-only",
                                     help="rebuild the report without training; every requested cell must "
                                          "be finished with this configuration (with --out alone: the "
                                          "configuration recorded in its benchmark.json)"),
    quiet: bool = typer.Option(False, "--quiet", "-q",
                               help="no progress bars (they are off anyway when stderr is not a terminal)"),
    jobs: Optional[int] = typer.Option(None, "--jobs", "-j",
                                       help="cells trained at once, each in its own process (default 1)"),
    print_config: bool = typer.Option(False, "--print-config",
                                      help="print the benchmark's whole configuration as commented YAML (every key, "
                                           "grids as grids, each model's params in full) and exit without training "
                                           "or writing anything: a file for --config"),
) -> None:
    """Run (or resume) a benchmark, print the results table and the path of the HTML report."""
    from recgoat.benchmark.config import benchmark_config_yaml, load_config_tree, load_recorded_config_tree

    try:
        # each occurrence of a repeatable option may hold a comma list: all joined in order (a value repeated
        # across occurrences is refused as one repeated within a list is)
        datasets = _joined(dataset)
        model_list = _joined(models)
        seed_text = _joined(seeds)
        seed_list = [_seed(s) for s in seed_text] if seed_text is not None else None
        # --report-only --out FOLDER alone: the configuration every run records there (benchmark.json)
        recorded = report_only and config is None and not (datasets and models) and out is not None
        if config is None and not (datasets and models) and not recorded:
            raise RecGOATError("give --config FILE.yaml, or at least --dataset and --models"
                               + (", or --out of the benchmark folder to report" if report_only else ""))
        overrides = {"datasets": datasets, "models": model_list, "seeds": seed_list, "epochs": epochs,
                     "out": str(out) if out is not None else None, "progress": False if quiet else None,
                     "jobs": jobs}
        # the tree as given (grids, presets) beside the configuration, for --print-config
        tree, cfg = (load_recorded_config_tree(out, overrides, set_) if recorded
                     else load_config_tree(config, overrides, set_))
        if print_config:  # before anything is read or written: the configuration only
            sys.stdout.write(benchmark_config_yaml(tree, cfg))
            return
        if report_only:
            from recgoat.benchmark.runner import report_only as _report_only

            paths = _report_only(cfg)  # refuses unless every requested cell is finished with this config
            failed: dict = {}
        else:
            from recgoat.benchmark.runner import run_benchmark

            with _sigterm_as_interrupt():
                run = run_benchmark(cfg)
            paths, failed = run.report, run.failed
    except RecGOATError as e:
        print_error(str(e))  # as every command prints it
        raise typer.Exit(1)
    typer.echo(Path(paths["md"]).read_text())
    typer.echo(f"HTML report: {paths['html']}\nLaTeX tables: {paths['tex']}")
    if failed:
        lines = "".join(f"\n  {title}: {msg}" for title, msg in failed.items())
        typer.echo(f"{len(failed)} cell(s) failed; see error.txt in their run folders:{lines}", err=True)
        raise typer.Exit(1)


def main() -> None:  # pragma: no cover - console entry for `python -m recgoat.benchmark.cli`
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
