"""``recgoat`` command line: a thin shell over the Python API.

    recgoat datasets list | info NAME | prepare NAME --out DIR
    recgoat models list | show NAME [--preset P]      (recgoat.models.catalogue)
    recgoat encode text|image|users|all DATASET       (recgoat.features)
    recgoat train [--config FILE] [--model M] [--dataset D] [--set key=value ...]
    recgoat evaluate RUN_DIR [--split test]
    recgoat benchmark ...                             (recgoat.benchmark)
    recgoat export / recommend / serve ...            (recgoat.serving)

Errors caused by the user's input are printed as one line and exit with status 1.
"""
from __future__ import annotations

import json
import sys
import textwrap
import warnings
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from recgoat.errors import ConfigError, RecGOATError, cli_spelling, print_error, show_warning

app = typer.Typer(help="LLM-enhanced multimodal recommendation (RecGOAT) and its peers.",
                  no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False)
datasets_app = typer.Typer(help="List, inspect and prepare datasets.", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")
models_app = typer.Typer(help="List the models and show the hyper-parameters each takes.", no_args_is_help=True)
app.add_typer(models_app, name="models")
console = Console()


def _show_flags_without_metavar() -> None:
    """Show no metavar for a flag in the help: typer (0.29) gives every option its type in the rich help, so
    `--json <bool>`, `--help <bool>` read as if they took a value (its plain, non-rich help shows flags without).
    Here, not in each command: the `--help` option typer adds has no declaration of ours to give a metavar."""
    from typer.core import TyperOption

    shown = getattr(TyperOption, "display_type_rich", None)
    if shown is None or getattr(shown, "_recgoat", False):  # an older typer (no type for flags), or done
        return

    def display_type_rich(self, ctx):
        if self.is_flag and not self.count and self.metavar is None:
            return None
        return shown(self, ctx)

    display_type_rich._recgoat = True
    TyperOption.display_type_rich = display_type_rich


_show_flags_without_metavar()


def _print_version(value: bool) -> None:
    if value:
        import torch

        from recgoat import __version__

        # what a bug report needs: torch's build (CPU or CUDA) decides most numbers' last digits
        print(f"recgoat {__version__} (torch {torch.__version__}, Python {sys.version.split()[0]})")
        raise typer.Exit()


@app.callback()
def _options(version: bool = typer.Option(False, "--version", callback=_print_version, is_eager=True,
                                          help="print recgoat's version (and torch's, Python's) and exit")) -> None:
    """LLM-enhanced multimodal recommendation (RecGOAT) and its peers."""


# What each command keeps when interrupted, and how it goes on: one line listing every command's units told a
# `recgoat train` of encode chunks, LLM answers and benchmark cells. Every command writes through temp files, so
# nothing is half-written; said by unit, as an encode stopped inside its first chunk keeps nothing.
_CHUNKS = "finished chunks of rows (chunk_size, default 512; the chunk under way is done again)"
_RESUMES = "the same command resumes from them"
_INTERRUPTED = {
    ("train",): "the run folder keeps the checkpoint of its last finished epoch (the epoch under way is run "
                "again): the same command resumes from it",
    ("evaluate",): "nothing was written (evaluate_*.json comes at the end): run the command again",
    ("encode", "text"): f"the feature folder keeps its {_CHUNKS}: {_RESUMES}",
    ("encode", "image"): f"the feature folder keeps its {_CHUNKS}, and of the image chunk under way the rows it "
                         f"finished: {_RESUMES}",
    ("encode", "users"): f"the LLM profile answers received are kept, and the feature folder's {_CHUNKS}: "
                         f"{_RESUMES}",
    ("encode", "all"): f"the LLM profile answers received are kept, and the feature folder's {_CHUNKS} (for "
                       f"images, also the rows of the chunk under way): {_RESUMES}",
    ("benchmark",): "finished cells are kept, and the cells under way keep the checkpoint of their last finished "
                    "epoch: the same command resumes, training only what is left",
    ("datasets", "prepare"): "the --out folder is written whole or not at all, so it is as it was: run the "
                             "command again",
    ("export",): "an artefact is swapped in only once complete, so the folder is as it was: run the command again",
}


def _interrupted_message(argv: list[str]) -> str:
    """The Ctrl-C line for the command ``argv`` (``sys.argv[1:]``) names: what it keeps and how it goes on."""
    words = []
    for arg in argv:  # the command and its subcommand come first (the only global option, --version, exits)
        if arg.startswith("-") or len(words) == 2:
            break
        words.append(arg)
    said = _INTERRUPTED.get(tuple(words)) or _INTERRUPTED.get(tuple(words[:1]))
    return f"interrupted; {said or 'nothing is half-written (files are written whole): run the command again'}"


def _interrupted() -> None:
    _close_progress_bars()
    Console(stderr=True).print(_interrupted_message(sys.argv[1:]), highlight=False, soft_wrap=True)
    sys.exit(130)


def _close_progress_bars() -> None:
    """Close the tqdm bars an interrupted command left open, so the line below starts on its own line rather
    than after a half-drawn bar (and no bar is redrawn under it at exit)."""
    tqdm_std = sys.modules.get("tqdm.std")
    if tqdm_std is None:
        return
    for bar in list(getattr(tqdm_std.tqdm, "_instances", ())):
        try:
            bar.close()
        except Exception:  # pragma: no cover - a bar on a closed stream: nothing left to tidy
            pass


def _mount_optional() -> None:
    """Mount the feature, benchmark and serving command groups (each owned by its package)."""
    try:
        from recgoat.features.cli import app as encode_app

        app.add_typer(encode_app, name="encode", help="Encode item text, images and user profiles.")
    except ImportError:  # pragma: no cover - package being built
        pass
    try:
        from recgoat.benchmark.cli import app as bench_app

        for info in bench_app.registered_commands:
            # help=None: typer shows the callback's docstring (a fallback here hid it from `benchmark --help`)
            app.command("benchmark", help=info.help)(info.callback)
            break
    except ImportError:  # pragma: no cover
        pass
    try:
        from recgoat.serving.cli import app as serving_app

        app.registered_commands.extend(serving_app.registered_commands)
    except ImportError:  # pragma: no cover
        pass


# ---------------------------------------------------------------------------- datasets
@datasets_app.command("list")
def datasets_list() -> None:
    """Datasets known by name (embedded, shared) and where they are."""
    from recgoat.datasets import available

    table = Table("name", "where")
    table.add_column("path", overflow="fold")  # not "…": a pipe gets 80 columns, and the path is the answer
    for row in available():
        table.add_row(*(escape(str(row[c])) for c in ("name", "where", "path")))
    console.print(table)


# help= rather than a docstring where the text runs past one source line: typer's rich help keeps a docstring's
# line breaks (in command lists, and in all but the first paragraph), which then cut sentences at any width
@datasets_app.command("info", help="Statistics of a dataset after preparation (users, items, interactions, sparsity, "
                      "split), with the options `datasets prepare` takes.\n\nFor an MMRec folder also the feature "
                      "files it brings (text_feat.npy, image_feat.npy: rows x dims).")
def datasets_info(
    name: str = typer.Argument(..., help="dataset name or folder"),
    min_rating: Optional[float] = typer.Option(
        None, help="keep ratings >= this as implicit feedback \\[default: none: every rating counts]"),
    k_core: Optional[int] = typer.Option(None, help="iterative k-core filter \\[default: 5]"),
    split: Optional[str] = typer.Option(None, help="random | temporal | loo | none \\[default: random]"),
    seed: Optional[int] = typer.Option(None, help="split seed \\[default: 2026]"),
) -> None:
    ds = _load_prepared(name, min_rating=min_rating, k_core=k_core, split=split, seed=seed)
    # removal lines inside the JSON: stdout stays parseable
    console.print_json(json.dumps(ds.describe()))


@datasets_app.command("prepare")
def datasets_prepare(
    name: str = typer.Argument(..., help="dataset name or folder"),
    out: Path = typer.Option(..., "--out", "-o", help="folder to write (Parquet + manifest.json)"),
    min_rating: Optional[float] = typer.Option(
        None, help="keep ratings >= this as implicit feedback \\[default: none: every rating counts]"),
    k_core: Optional[int] = typer.Option(None, help="iterative k-core filter \\[default: 5]"),
    split: Optional[str] = typer.Option(None, help="random | temporal | loo | none \\[default: random]"),
    seed: Optional[int] = typer.Option(None, help="split seed \\[default: 2026]"),
) -> None:
    """Filter, remap and split a dataset, and save it as a folder that reloads without recomputing."""
    from recgoat.datasets.preprocess import removal_lines

    ds = _load_prepared(name, min_rating=min_rating, k_core=k_core, split=split, seed=seed)
    ds.save(out)
    console.print(f"prepared {escape(str(ds.name))}: {ds.n_users} users, {ds.n_items} items, "
                  f"{len(ds.interactions)} interactions → {escape(str(out))}", soft_wrap=True)  # path kept whole
    for line in removal_lines(ds.info):  # what filtering removed, else a shrunken catalogue does not say why
        console.print(line, highlight=False, markup=False, soft_wrap=True)


def _load_prepared(name: str, **given):
    """The dataset prepared with the options given on the command line (the others at their defaults);
    refused when ``name`` is already split, so the options would be ignored."""
    from recgoat.datasets import PrepareConfig, load
    from recgoat.datasets.registry import default_prepare_config, refuse_ignored_prepare_options

    if not name.strip():  # Path("") is the current folder
        raise RecGOATError("the dataset name or folder is empty")
    given = {k: v for k, v in given.items() if v is not None}
    refuse_ignored_prepare_options(name, given)
    return load(name, PrepareConfig(**{**default_prepare_config(name).__dict__, **given}))


# ---------------------------------------------------------------------------- models
@models_app.command("list", help="List every model: whether it trains, the features it reads, its presets and its "
                    "paper.\n\nrecgoat's own first, then installed plugins' (marked \"(plugin)\"); the features are "
                    "those read with the model's defaults. A plugin that fails to load is one error line after the "
                    "others' listing (exit status 1).")
def models_list(
    as_json: bool = typer.Option(False, "--json", help="print JSON (every model's full description) instead"),
) -> None:
    from recgoat.models.catalogue import list_models

    failures: list[str] = []
    infos = list_models(failures)
    _print_models(infos, as_json)
    for message in failures:  # after the listing, which may be long: what a reader must not miss
        print_error(message)
    if failures:
        raise typer.Exit(1)


def _print_models(infos, as_json: bool) -> None:
    if as_json:
        print(json.dumps([i.as_dict() for i in infos], default=str, indent=1))
        return
    rows = [(i.name + ("" if i.builtin else " (plugin)"), i.trains, ", ".join(i.reads) or "-",
             ", ".join(i.presets) or "-", i.summary) for i in infos]
    if console.width < 120:  # a pipe's 80 columns: one entry per model, as `models show` does its parameters
        for name, trains, reads, presets, summary in rows:
            _print_entry(f"[bold]{escape(name)}[/]  trains: {trains}; reads: {escape(reads)}; presets: "
                         f"{escape(presets)}", summary)
    else:
        table = Table("name", "trains", "reads", "presets")
        table.add_column("reference", overflow="fold")
        for row in rows:
            table.add_row(*map(escape, row))
        console.print(table)
    console.print("[dim]hyper-parameters: recgoat models show NAME[/]", highlight=False)


def _print_entry(head: str, text: str) -> None:
    """A listing's entry where a table would not fit: ``head`` (markup) on one line, ``text`` (plain) indented
    under it, wrapped to the console."""
    console.print(head, highlight=False, soft_wrap=True)
    for line in textwrap.wrap(text, max(console.width - 4, 40)):
        console.print(f"    {escape(line)}", highlight=False, soft_wrap=True)


@models_app.command("show", help="Show a model's hyper-parameters: type, bounds, default (or a preset's value), what "
                    "each does.\n\nSet them with `recgoat train --set model.params.NAME=VALUE` (a benchmark: "
                    "`--set models.MODEL.params.NAME=VALUE`).")
def models_show(
    name: str = typer.Argument(..., help="model name (recgoat models list)"),
    preset: Optional[str] = typer.Option(None, "--preset", "-p",
                                         help="show the values a preset sets (a packaged name or a YAML file)"),
    as_json: bool = typer.Option(False, "--json", help="print JSON instead"),
) -> None:
    from recgoat.models.catalogue import model_info

    info = model_info(name, preset)
    if as_json:
        print(json.dumps(info.as_dict(), default=str, indent=1))
        return
    reads = ", ".join(info.reads) or "no side features"
    console.print(f"[bold]{escape(info.name)}[/] ({escape(info.class_path)}): {escape(info.summary)}",
                  highlight=False, soft_wrap=True)
    console.print(f"trains: {escape(info.trains)}; reads: {escape(reads)}; presets: "
                  f"{escape(', '.join(info.presets) or 'none')}", highlight=False, soft_wrap=True)
    if not info.params:
        console.print("no hyper-parameters", highlight=False)
        return
    value = "default" if preset is None else f"value ({escape(preset)}; default)"
    shown = {}
    for p in info.params:
        shown[p.name] = escape(json.dumps(p.value, default=str))
        if p.from_preset:  # the preset's value in bold, the default beside it
            shown[p.name] = f"[bold]{shown[p.name]}[/] ({escape(json.dumps(p.default, default=str))})"
    if console.width < 120:
        # five columns in 80 (a pipe's width) cut the names --set needs and wrap each description over ten lines:
        # one entry per parameter instead, its name first on its line
        for p in info.params:
            bounds = f", {escape(p.bounds)}" if p.bounds else ""
            _print_entry(f"[bold]{escape(p.name)}[/]  {escape(p.type)}{bounds}; {value}: {shown[p.name]}", p.doc)
        return
    table = Table("parameter", "type", "bounds", value)
    table.add_column("what it does", overflow="fold")
    for p in info.params:
        table.add_row(escape(p.name), escape(p.type), escape(p.bounds), shown[p.name], escape(p.doc))
    console.print(table)


# ---------------------------------------------------------------------------- training
def _train_defaults() -> dict[str, str]:
    """``[default: …]`` of train's options, read from the run configuration so the help cannot drift from it
    (typer shows none for an option whose value None means "the config's")."""
    from recgoat.config import DataConfig, ModelSection, RunConfig
    from recgoat.training.trainer import TrainConfig

    values = {"model": ModelSection.model_fields["name"].default, "dataset": DataConfig.model_fields["name"].default,
              "epochs": TrainConfig.model_fields["epochs"].default, "seed": TrainConfig.model_fields["seed"].default,
              "device": TrainConfig.model_fields["device"].default,
              "out": RunConfig.model_fields["out"].default}
    return {k: f"\\[default: the config's, else {v}]" for k, v in values.items()}


try:
    _DEFAULTS = _train_defaults()  # imports torch (through the trainer): seconds in which a Ctrl-C is likely
except KeyboardInterrupt:  # raised while `recgoat` imports this module, before main() can catch it
    _interrupted()


@app.command("train")
def train_cmd(
    config: Optional[Path] = typer.Option(None, "--config", "-c",
                                          help="YAML run configuration \\[default: none: built-in defaults]"),
    model: Optional[str] = typer.Option(None, help=f"model name (overrides the config) {_DEFAULTS['model']}"),
    dataset: Optional[str] = typer.Option(None, help=f"dataset name or folder (overrides the config) "
                                                     f"{_DEFAULTS['dataset']}"),
    features: Optional[str] = typer.Option(None, help="feature folder written by `recgoat encode`, or `auto`: "
                                                      "encoded into OUT/features/DATASET and reused (a folder "
                                                      "named auto: ./auto) \\[default: the config's, else none: "
                                                      "ID embeddings only]"),
    epochs: Optional[int] = typer.Option(None, help=f"maximum epochs (early stopping may end sooner) "
                                                    f"{_DEFAULTS['epochs']}"),
    seed: Optional[int] = typer.Option(None, help=f"training seed {_DEFAULTS['seed']}"),
    device: Optional[str] = typer.Option(None, help=f"where the model trains: cpu, cuda, cuda:1, mps "
                                                    f"{_DEFAULTS['device']}"),
    out: Optional[str] = typer.Option(None, help=f"root folder for runs {_DEFAULTS['out']}"),
    # a str: typer makes a Path of "" (an unset shell variable), which is "." and trained into the current folder
    run_dir: Optional[str] = typer.Option(None, help="exact run folder, resumed if it holds a checkpoint "
                                                     "\\[default: OUT/DATASET/MODEL/seedS; DATASET+seed=7 for "
                                                     "--set data.seed=7, and so for other data.* options]"),
    set_: list[str] = typer.Option([], "--set", help="override any key of the run configuration, repeatable, "
                                                     "e.g. --set trainer.lr=5e-3 or model.params.n_layers=2 (a model's "
                                                     "params: recgoat models show MODEL); wins over the options"),
    print_config: bool = typer.Option(False, "--print-config",
                                      help="print the run's whole configuration as commented YAML (every key, the "
                                           "model's params in full) and exit without training: a file for --config"),
) -> None:
    """Train a model with early stopping on validation; prints validation and test metrics."""
    from recgoat.config import load_config, run_config_yaml
    from recgoat.training.run import train

    # the options' values are taken as typed, not read as YAML (a folder "runs #2" or "2024" stays one);
    # --set wins over them
    values = {key: value for key, value in (("model.name", model), ("data.name", dataset), ("features", features),
                                            ("trainer.epochs", epochs), ("trainer.seed", seed),
                                            ("trainer.device", device), ("out", out))
              if value is not None}
    if run_dir is not None and not run_dir.strip():
        raise ConfigError("--run-dir is empty (the current folder would be the run folder: give `--run-dir .`)")
    if run_dir is not None and out is not None:  # --out would be silently ignored
        raise ConfigError("give --out (runs go to OUT/DATASET/MODEL/seedS) or --run-dir (the exact run folder), "
                          "not both")
    # the epoch bar is drawn only on a terminal unless the config asks for it: the trainer decides (_show_progress)
    cfg = load_config(config, list(set_), values=values)
    if print_config:
        sys.stdout.write(run_config_yaml(cfg, run_dir))
        return
    result = train(cfg, run_dir=run_dir)
    _print_result(result)


@app.command("evaluate")
def evaluate_cmd(
    run_dir: Path = typer.Argument(..., help="a run folder written by `recgoat train` or a benchmark cell"),
    split: str = typer.Option("test", help="valid | test"),
    test_mask: str = typer.Option("train+valid", help="items masked when scoring test: train+valid, or train "
                                                       "(MMRec's convention: validation items stay candidates)"),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="dataset name or folder, prepared as the "
                                          "run recorded; default: the one its run_config.json or cell.json records"),
) -> None:
    """Recompute the metrics of a finished run's best checkpoint."""
    from recgoat.training.run import evaluate

    with cli_spelling():  # its errors name --dataset, --split, --test-mask rather than the Python arguments
        means = evaluate(run_dir, split, test_mask=test_mask, dataset_source=dataset)
    _print_metrics({split: means})


def _print_metrics(blocks: dict[str, dict[str, float]]) -> None:
    keys = list(next(iter(blocks.values())).keys())
    names = sorted({k.split("@")[0] for k in keys}, key=["recall", "ndcg", "precision", "hit", "map"].index)
    ks = sorted({int(k.split("@")[1]) for k in keys})
    table = Table("split", "metric", *[f"@{k}" for k in ks])
    for split, means in blocks.items():
        for n in names:
            table.add_row(split, n, *[f"{means[f'{n}@{k}']:.4f}" for k in ks])
    console.print(table)


def _print_result(result: dict) -> None:
    console.print(f"[bold]{escape(str(result['model']))}[/] on {escape(str(result['dataset']))}: "
                  # epochs count from 0 (as in result.json and log.jsonl); the benchmark's epochs→best is 1 more
                  f"best epoch {result['best_epoch']} (counted from 0) of {result['epochs_run']} run, "
                  f"{result['seconds_per_epoch']:.2f} s/epoch", soft_wrap=True)  # one line, as in a log
    if result.get("run_dir"):
        console.print(f"run folder: {result['run_dir']}", highlight=False, markup=False, soft_wrap=True)
    resumed = result.get("resumed_epochs") or 0
    if resumed:  # else a re-run of a finished run looks like a new one that trained in no time
        console.print(f"resumed from its checkpoint: {resumed} epoch(s) run before, "
                      f"{max(result['epochs_run'] - resumed, 0)} now", highlight=False, markup=False, soft_wrap=True)
    for line in [*_summary_lines(result.get("summary") or {}), *(f"note: {n}" for n in result.get("notes", ()))]:
        console.print(line, highlight=False, markup=False, soft_wrap=True)  # one line each, as in a log
    _print_metrics({"valid": result["valid"], "test": result["test"]})


def _summary_lines(summary: dict) -> list[str]:
    """Which feature views a model used: a view silently left out (no image features in the folder, say)
    would otherwise show only in result.json."""
    from recgoat.models.modalities import views_read

    lines = []
    if "modalities_used" in summary:
        lines.append(f"feature views used: {', '.join(views_read(summary)) or 'none (ID embeddings only)'}")
    if "fusion" in summary:  # RecGOAT: an ablation set by config alone shows what it switched off
        oat = summary.get("oat")
        align = [*(["CMCL"] if summary.get("cmcl") else []), *([f"OAT ({oat})"] if oat else [])]
        attention = summary.get("rating_attention")  # a string says how (e.g. "endpoints only (no ratings)")
        shown = attention if isinstance(attention, str) else ("on" if attention else "off")
        fusion, gamma = summary["fusion"], summary.get("gamma")
        if summary.get("gamma_fixed"):  # a γ grid point: weights set by the config, not learned
            weights = ", ".join(f"{k} {v:g}" for k, v in gamma.items()) if isinstance(gamma, dict) else ""
            fusion = f"{fusion} with fixed weights" + (f" ({weights})" if weights else "")
        lines.append(f"fusion: {fusion}; alignment: {' + '.join(align) or 'none'}; rating attention: {shown}")
    if "item_graphs" in summary or "user_graph" in summary:  # RecGOAT: no_item_graph, gat_layers: 0, …
        lines.append(f"kNN graph attention: item-item {summary.get('item_graphs', 'off')}; user-user "
                     f"{summary.get('user_graph', 'off')}")
    if summary.get("note"):
        lines.append(f"note: {summary['note']}")
    return lines


def main() -> None:
    shown = warnings.showwarning
    warnings.showwarning = show_warning  # one line (the workers of `benchmark -j N` print theirs so too)
    try:
        app()
    except RecGOATError as e:
        print_error(str(e))  # plain text: a path like data/[test] must neither vanish nor crash rich's markup
        sys.exit(1)
    except OSError as e:  # a folder not writable, a full disk, a file gone: one line naming it, no traceback
        where = ", ".join(str(f) for f in (e.filename, e.filename2) if f is not None)
        print_error(f"{where + ': ' if where else ''}{e.strerror or e}")
        sys.exit(1)
    except KeyboardInterrupt:
        _interrupted()
    except SystemExit as e:
        # typer turns Ctrl-C inside a command into a silent exit 130 (Exit(130) from KeyboardInterrupt), so the
        # handler above saw only an interrupt before a command started and this line was never printed
        if e.code == 130 and isinstance(getattr(e.__context__, "__cause__", None), KeyboardInterrupt):
            _interrupted()
        raise
    finally:
        warnings.showwarning = shown


def entry() -> None:
    """The ``recgoat`` command: :func:`main`, then, once a command has finished, Ctrl-C ignored. Only the
    interpreter's teardown is left then (~1 s with torch), where a Ctrl-C ended the process silently with status
    -2 or an "Exception ignored in atexit" traceback. Here and not in ``main``: a caller of ``main`` in its own
    process (a test, a script) went on with Ctrl-C ignored."""
    import signal

    try:
        main()
    except SystemExit as e:
        if not e.code:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise
    signal.signal(signal.SIGINT, signal.SIG_IGN)


try:
    _mount_optional()  # imports torch: seconds in which a Ctrl-C is likely
except KeyboardInterrupt:  # raised while `recgoat` imports this module, before main() can catch it
    _interrupted()


if __name__ == "__main__":
    entry()
