"""``recgoat benchmark``: datasets × models × seeds, resumable, with a self-contained report.

``run_benchmark(load_config("bench.yaml"))`` trains every cell into ``<out>/runs/<dataset>/<model>/seed<s>/``
(skipping finished ones) and writes ``results.csv``, ``results.md``, ``report.html`` and ``results.tex`` under ``<out>``.
"""
from recgoat.benchmark.cells import BenchmarkRun, plan_cells
from recgoat.benchmark.config import BenchmarkConfig, DatasetSpec, ModelSpec, load_config
from recgoat.benchmark.report import aggregate, collect_runs, paired_test, write_report
from recgoat.benchmark.runner import run_benchmark

__all__ = ["BenchmarkConfig", "BenchmarkRun", "DatasetSpec", "ModelSpec", "aggregate", "collect_runs",
           "load_config", "paired_test", "plan_cells", "run_benchmark", "write_report"]
