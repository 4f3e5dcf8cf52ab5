"""CLI commands for serving: ``recgoat export``, ``recgoat recommend`` and ``recgoat serve``.

A trainer run folder holds the best model but not the dataset, so ``export`` is the one step that turns
it into a self-contained artefact; ``recommend`` and ``serve`` then need only that folder.
"""
from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from recgoat.errors import DataError, RecGOATError

if TYPE_CHECKING:
    from recgoat.datasets import Dataset
    from recgoat.training.run import RunRecord

app = typer.Typer(help="Export, query and serve trained runs.", no_args_is_help=True, add_completion=False)
console = Console()
err_console = Console(stderr=True)


def _fail(e: Exception) -> None:
    # one line whatever the terminal width, and a path holding [brackets] is not read as rich markup; on
    # stderr, as every other command's errors: `recgoat recommend … > top.txt` put the error in the file
    err_console.print(f"[red]error:[/red] {escape(str(e))}", highlight=False, soft_wrap=True)
    raise typer.Exit(1)  # as every other command; 2 stays click's usage errors


class Seen(str, Enum):
    """``export --seen``: the interactions an artefact records as a user's seen history."""

    all = "all"
    train = "train"


@app.command("export")
def export_command(
    run_dir: Path = typer.Argument(..., help="trainer run folder (holding best/) or a saved model folder"),
    dataset: Optional[str] = typer.Option(None, "--dataset", "-d", help="dataset name or folder the run was trained "
                                          "on; default: the one its run_config.json or cell.json records"),
    out: Path = typer.Option(..., "--out", "-o", help="artefact folder to write"),
    features: Optional[Path] = typer.Option(None, "--features", help="feature folder (enables profile texts)"),
    overwrite: bool = typer.Option(False, help="replace an existing artefact folder"),
    seen: Seen = typer.Option(Seen.all, "--seen", help="interactions recorded as each user's seen history (left "
                              "out by exclude_seen, listed by /users/{id}/history): all = train+valid+test, "
                              "train = the training split only (as evaluated)"),
) -> None:
    """Export a trained run with its id maps, item table and history as a servable artefact.

    Every input (destination, run, dataset, fingerprint, features) is checked before anything is written,
    and an existing artefact is replaced only with --overwrite and only once the new one is complete.
    """
    from recgoat.datasets import load
    from recgoat.io import read_json
    from recgoat.models.base import Recommender
    from recgoat.serving.artifacts import check_destination, export_run
    from recgoat.training.run import read_run_record, unfinished_note

    try:
        check_destination(out, overwrite)  # first: fail before the slow loads
        unfinished = unfinished_note(run_dir)
        if unfinished:
            err_console.print(f"[yellow]warning:[/] {escape(unfinished)}", highlight=False, soft_wrap=True)
        model_dir = run_dir / "best" if (run_dir / "best").is_dir() else run_dir
        try:
            model = Recommender.load(model_dir)
        except RecGOATError:
            raise
        except Exception as e:  # safetensors/torch errors on a tampered file: still the user's folder
            raise DataError(model_dir, f"not a loadable saved model ({type(e).__name__}: {e})") from None
        record = read_run_record(run_dir)  # once, for the dataset and the feature folder
        if dataset is None:
            ds, used = _recorded_dataset(run_dir, record)
        else:
            ds, used = load(dataset), None
        result = run_dir / "result.json"
        if dataset is not None and result.exists():
            try:
                meta = read_json(result)
            except (OSError, ValueError) as e:
                raise DataError(result, f"not readable JSON ({e})") from None
            fp = meta.get("dataset_fingerprint") if isinstance(meta, dict) else None
            if fp and fp != ds.fingerprint():
                raise DataError(result, f"the run was trained on dataset fingerprint {fp}, but {dataset!r} has "
                                        f"{ds.fingerprint()}: not the same data")
        note = None
        if features is None:  # the run's own feature folder, so a text-trained model keeps its text encoder
            features, note = _recorded_features(record)
        path = export_run(model, ds, out, features, overwrite=overwrite, seen=seen.value)
    except RecGOATError as e:
        _fail(e)
    for line in (used, note):
        if line:
            console.print(line, highlight=False, markup=False, soft_wrap=True)  # paths may hold [brackets]
    console.print(f"exported {model.name} on {ds.name} → {path}", highlight=False, markup=False, soft_wrap=True)


def _recorded_dataset(run_dir: Path, record: RunRecord | None) -> tuple[Dataset, str]:
    """The dataset ``run_dir``'s record (training.run.read_run_record: run_config.json of `recgoat train`, or cell.json
    of a benchmark cell) names, prepared as it was for training, checked against the fingerprint the run recorded;
    and a line saying so."""
    from recgoat.training.run import trained_fingerprint

    if record is None:
        parent = run_dir.parent  # `export RUN/best`: the model folder, its records are one level up
        ran = run_dir.name == "best" and any((parent / f).is_file() for f in ("run_config.json", "cell.json"))
        hint = f"give the run folder {parent} instead, or " if ran else ""
        raise DataError(run_dir, f"records no dataset (no run_config.json or cell.json: not a `recgoat train` run "
                                 f"or benchmark cell folder): {hint}pass --dataset NAME_OR_FOLDER")
    name = record.dataset_name  # a cell's where it is now: an error naming the paths tried if nowhere
    ds = record.load_dataset()  # a recorded folder moved away: an error naming the record and --dataset
    where, fp = trained_fingerprint(run_dir)
    where, fp = (where, fp) if fp is not None else (record.path, record.recorded_fingerprint)
    if fp is not None and fp != ds.fingerprint():
        raise DataError(where, f"the run was trained on dataset fingerprint {fp}, but {name} (as {record.path.name} "
                               f"records it) now has {ds.fingerprint()}: the data changed since; pass --dataset "
                               f"with the data the run was trained on")
    return ds, f"dataset: {name}, prepared as the run's {record.path.name} records (--dataset to choose another)"


def _recorded_features(record: RunRecord | None) -> tuple[Optional[Path], Optional[str]]:
    """The feature folder recorded in a trainer run's run_config.json or a benchmark cell's cell.json, and a
    line saying what was done; (None, None) when there is no record, or a run's names none or is not readable."""
    if record is not None and record.is_cell:
        return _cell_features(record)
    recorded = record.content.get("features") if record is not None and isinstance(record.content, dict) else None
    if not recorded:
        return None, None
    if Path(recorded).is_dir():
        return Path(recorded), f"features: {recorded} (the run's, from run_config.json; --features to choose another)"
    return None, (f"features: the run's folder {recorded} is not found from here; exporting without text "
                  f"features (pass --features to enable profile texts)")


_WITHOUT = "exporting without text features (pass --features to enable profile texts)"


def _cell_features(record: RunRecord) -> tuple[Optional[Path], Optional[str]]:
    """The feature folder a benchmark cell trained with, as cell.json's ``data.features`` records it: a folder as
    typed (relative to where the benchmark ran), or ``auto``: ``<out>/features/<label>[-split<seed>]``
    (:func:`~recgoat.benchmark.data.auto_feature_folder`), the cell folder being
    ``<out>/runs/<label>/<model>/seed<seed>``. Always with a line: a cell exported without text features used to
    lose its profile texts silently."""
    from recgoat.benchmark.paths import locate_recorded

    meta, run_dir = record.content, record.path.parent
    try:
        recorded = meta["data"].get("features")
    except (KeyError, TypeError, AttributeError):  # not readable (None), an older record, or not a dict
        return None, f"features: cell.json records no feature folder; {_WITHOUT}"
    if not recorded or not isinstance(recorded, str):  # null, or its model reads none (the runner records none)
        return None, f"features: the cell trained without a feature folder (cell.json records none); {_WITHOUT}"
    if recorded != "auto":
        # where cell.json's `paths` records it (absolute; moved with the benchmark folder), else as typed
        found, tried = locate_recorded(recorded, meta, "features", run_dir)
        if found is not None and Path(found).is_dir():
            return Path(found), f"features: {found} (the cell's, from cell.json; --features to choose another)"
        why = "" if Path(recorded).is_absolute() else \
            " (a relative path is relative to the folder the benchmark was started in)"
        looked = f"; looked for it at {', '.join(tried)}" if len(tried) > 1 else ""
        return None, f"features: the cell's folder {recorded} is not found from here{why}; {_WITHOUT}{looked}"
    folder = _auto_features(run_dir.absolute())
    if folder is not None and folder.is_dir():
        return folder, f"features: {folder} (the cell's `features: auto` folder; --features to choose another)"
    where = f" ({folder} does not exist)" if folder is not None else \
        " (the cell folder is not <benchmark out>/runs/<dataset>/<model>/seed<seed>)"
    return None, f"features: the cell's `features: auto` folder is not found{where}; {_WITHOUT}"


def _auto_features(run_dir: Path) -> Optional[Path]:
    """``<out>/features/<label><tag>`` for a cell at ``<out>/runs/<label>/<model>/seed<seed>`` (None if it is not
    there); ``<tag>`` is ``-split<seed>`` under benchmark.json's ``split_seeds: true`` (each seed re-splits)."""
    from recgoat.benchmark.data import auto_feature_folder
    from recgoat.io import read_json

    if len(run_dir.parents) < 4 or run_dir.parents[2].name != "runs" or not run_dir.name.startswith("seed"):
        return None
    out, label = run_dir.parents[3], run_dir.parents[1].name
    plain, split = auto_feature_folder(out, label), auto_feature_folder(out, label, run_dir.name[len("seed"):])
    try:
        split_seeds = read_json(out / "benchmark.json").get("split_seeds")
    except (OSError, ValueError, AttributeError):
        split_seeds = None
    if isinstance(split_seeds, bool):
        return split if split_seeds else plain
    # no readable benchmark.json: the one of the two that exists (plain when neither or both do)
    return split if split.is_dir() and not plain.is_dir() else plain


def _table(title: str, run, ids, scores=None) -> Table:
    from recgoat.serving.artifacts import display_text

    titles = run.titles
    t = Table(title=escape(title), title_justify="left")
    t.add_column("#", justify="right")
    # fold, not "…": piped output is 80 columns wide, and a cut id cannot be looked up again
    t.add_column("item_id", overflow="fold")
    t.add_column("title", overflow="fold")
    extra = [c for c in ("genres", "year") if c in run.items.columns]
    for c in extra:
        t.add_column(c)
    if scores is not None:
        t.add_column("score", justify="right")
    for n, i in enumerate(ids.tolist()):
        if i < 0:
            break
        row = run.items.iloc[i]
        cells = [str(n + 1), run.item_ids[i], titles[i], *[display_text(row[c]) for c in extra]]
        if scores is not None:
            cells.append(f"{float(scores[n]):.4f}")
        t.add_row(*map(escape, cells))  # titles may hold [brackets] that rich would read as markup
    return t


def _unknown_id(kind: str, given: str, index: dict, n: int) -> str:
    """Why ``given`` is no known id: ids are matched as exact text ("7" is not "007"), and a user or item with
    fewer interactions than the k-core filter (default 5) was dropped before training, without a word here."""
    near = [i for i in index if str(i).strip().lstrip("0") == given.strip().lstrip("0") and i != given][:3]
    hint = f"; did you mean {', '.join(repr(i) for i in near)}? (ids are matched as exact text)" if near else \
        f"; ids are matched as exact text, and {'an' if kind == 'item' else 'a'} {kind} with fewer interactions than the dataset's k-core " \
        f"filter (default 5) is dropped before training"
    return f"unknown {kind} id {given!r} ({n} {kind}s in this run){hint}"


@app.command("recommend")
def recommend_command(
    run: Path = typer.Argument(..., help="artefact folder (from `recgoat export`)"),
    user: Optional[str] = typer.Option(None, "--user", "-u", help="original user id"),
    item: Optional[str] = typer.Option(None, "--item", "-i", help="original item id: show similar items"),
    k: int = typer.Option(10, "-k", "--k", min=1, max=1000, help="number of items"),
    exclude_seen: bool = typer.Option(True, help="leave out the user's seen history (as the artefact records "
                                                  "it: see `export --seen`)"),
    history: int = typer.Option(10, min=0, help="how many recent history items to show"),
) -> None:
    """Print a user's recent history and recommendations (``--user``) or similar items (``--item``)."""
    from recgoat.serving.app import Service
    from recgoat.serving.artifacts import load_run

    if (user is None) == (item is None):
        _fail(RecGOATError("give exactly one of --user ID or --item ID"))
    try:
        r = load_run(run)
    except RecGOATError as e:
        _fail(e)
    svc = Service(r)
    if user is not None:
        u = r.user_index.get(user)
        if u is None:
            _fail(RecGOATError(_unknown_id("user", user, r.user_index, r.n_users)))
        if history:  # --history 0 printed an empty table
            where = "in training" if r.seen_scope == "train" else "seen"
            console.print(_table(f"user {user}: {int(svc.n_seen[u])} items {where}, most recent first", r,
                                 r.recent_history(u, history)))
        ids, scores = svc.recommend(u, k, exclude_seen)
        console.print(_table(f"top {k} for user {user} ({r.meta.get('model')})", r, ids, scores))
        found = int((ids >= 0).sum())  # -1: padding past the last candidate
        if found < k:  # an empty or short table said nothing of why
            console.print(f"note: {found} of the {r.n_items} items are left to recommend to user {user} "
                          f"(the others are seen; --no-exclude-seen ranks every item)"
                          if exclude_seen else f"note: the catalogue holds {r.n_items} items", highlight=False,
                          markup=False, soft_wrap=True)
    else:
        i = r.item_index.get(item)
        if i is None:
            _fail(RecGOATError(_unknown_id("item", item, r.item_index, r.n_items)))
        ids, scores = svc.similar(i, k)
        console.print(_table(f"items similar to {item} — {r.titles[i]} (cosine)", r, ids, scores))
        note = svc.similar_note(i)  # an item without training interactions: an empty table or content alone
        if note:
            console.print(f"note: {note}", highlight=False, markup=False, soft_wrap=True)


@app.command("serve")
def serve_command(
    run: Path = typer.Argument(..., help="artefact folder (from `recgoat export`)"),
    host: str = typer.Option("127.0.0.1", help="bind address (default: loopback only)"),
    # min 0, as `python -m recgoat.serving`: serve() listens on a free port and prints which
    port: int = typer.Option(8000, min=0, max=65535, help="TCP port; 0: a free port the system chooses"),
    index: str = typer.Option("flat", help="flat (exact); hnsw, hnsw-l2 or ivf (approximate; /metadata "
                                           "reports their recall)"),
) -> None:
    """Serve recommendations over HTTP with a web page at / and API docs at /docs."""
    from recgoat.serving.__main__ import serve

    code = serve(str(run), host, port, index)
    if code:
        raise typer.Exit(code)


if __name__ == "__main__":
    app()
