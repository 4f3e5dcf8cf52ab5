"""``recgoat encode text|image|users|all`` (mounted by the main CLI; also runnable as
``python -m recgoat.features.cli``).

Why: encoding is the slow, resumable first step, so it has its own commands with progress bars
(items/s); each command takes a dataset name or folder and writes ``features/<dataset>`` by default.
User errors (:class:`RecGOATError`) are printed as one line with exit code 1.
"""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import Optional

import typer

from recgoat.errors import ConfigError, DataError, RecGOATError, print_error
from recgoat.words import plural

app = typer.Typer(help="Encode item text, item images and user profiles into cached feature matrices.",
                  no_args_is_help=True, add_completion=False)

_WHICH = {"text": ("text",), "image": ("image",), "users": ("users",), "all": ("text", "image", "users")}
_HELP = {"text": "Embed item text with a sentence-transformers model.",
         "image": "Embed item images (EfficientNet-Lite0 by default; URLs are downloaded once).",
         "users": "Write user preference profiles (template, openai or transformers) and embed them.",
         "all": "Text, images and user profiles: whatever the dataset has."}


# the subcommands (besides `all`) that read each option; options not named here (--out, --device, --mmrec,
# --force, --progress) apply to every subcommand. The profiles are embedded with the text model.
_READ_BY = {"text_model": ("text", "users"), "batch_size": ("text", "users"), "template": ("text",),
            "max_chars": ("text",), "image_model": ("image",), "image_batch_size": ("image",),
            "image_cache": ("image",), "reuse_from": ("text", "image"), "backend": ("users",), "char_budget": ("users",),
            **{name: ("users",) for name in ("llm_base_url", "llm_model", "llm_api_key_env", "llm_concurrency",
                                             "llm_timeout", "llm_retries", "llm_backoff", "llm_max_tokens",
                                             "llm_temperature")}}


def _check_options_apply(ctx: typer.Context, which: tuple[str, ...]) -> None:
    """A ConfigError naming the options given on the command line that this subcommand does not read.

    Why: `encode text --image-batch-size 7` or `encode image --template ...` ran, ignored them and exited 0,
    so a mistyped subcommand went unnoticed. Only options given explicitly count (their defaults do not)."""
    flags = {p.name: p.opts[0] for p in ctx.command.params}

    def given(name: str) -> bool:
        # compared by name: typer may bring its own copy of click, whose ParameterSource is another class
        return getattr(ctx.get_parameter_source(name), "name", "DEFAULT") not in ("DEFAULT", "DEFAULT_MAP")

    if "users" in which and ctx.params.get("backend") == "template":  # the template backend asks no LLM
        llm = [flags[name] for name in _READ_BY if name.startswith("llm_") and given(name)]
        if llm:
            raise ConfigError(f"{', '.join(llm)}: {'applies' if len(llm) == 1 else 'apply'} to an LLM profile "
                              f"backend (--backend openai or transformers), not the template backend")
    if len(which) != 1:  # `encode all` reads every option
        return
    unread: dict[tuple[str, ...], list[str]] = {}
    for name, readers in _READ_BY.items():
        if which[0] not in readers and given(name):
            unread.setdefault(readers, []).append(flags[name])
    if unread:
        parts = [f"{', '.join(opts)} ({'it applies' if len(opts) == 1 else 'they apply'} to "
                 f"{', '.join(f'`encode {r}`' for r in readers)} and `encode all`)" for readers, opts in unread.items()]
        raise ConfigError(f"`encode {which[0]}` does not read " + ", nor ".join(parts))


def _fail(exc: Exception) -> None:
    print_error(str(exc))  # as every command prints it (a path holding [brackets] kept as it is)
    raise typer.Exit(1)


def _out_folder(path: Path) -> Path:
    """``path`` if it can be a folder to write into; else a DataError naming the file in the way (checked
    before the dataset is loaded)."""
    from recgoat.io import check_folder_path

    check_folder_path(path, "the output must be a folder")
    return path


def _make_command(which: tuple[str, ...]):
    def command(
        ctx: typer.Context,
        dataset: str = typer.Argument(..., help="dataset name (ml-latest-small, ml100k-mm) or folder"),
        out: Optional[Path] = typer.Option(None, "--out", help="output folder \\[default: features/<dataset>]"),
        text_model: Optional[str] = typer.Option(None, help="sentence-transformers name or path "
                                                            "\\[default: packaged all-MiniLM-L6-v2]"),
        template: Optional[str] = typer.Option(None, help="item text template, e.g. '{title}. {genres}. {overview}'"),
        max_chars: int = typer.Option(1200, help="item text cut past this many characters"),
        image_model: Optional[str] = typer.Option(None, help="'efficientnet-lite0' or 'package.module:factory'"),
        batch_size: int = typer.Option(64, help="text batch size"),
        image_batch_size: int = typer.Option(32, help="image batch size"),
        image_cache: Optional[Path] = typer.Option(None, help="download cache for image URLs"),
        reuse_from: Optional[Path] = typer.Option(None, help="a feature folder of the same items encoded for other "
                                                             "data (another split): its text and image matrices "
                                                             "are copied when made of the same inputs and encoder"),
        backend: str = typer.Option("template", "--backend", help="profile backend: template | openai | transformers"),
        llm_base_url: Optional[str] = typer.Option(None, help="OpenAI-compatible base URL, e.g. http://127.0.0.1:8000/v1"),
        llm_model: Optional[str] = typer.Option(None, help="LLM name (openai) or path (transformers)"),
        llm_api_key_env: Optional[str] = typer.Option(None, help="environment variable holding the API key"),
        llm_concurrency: int = typer.Option(4, help="parallel LLM requests (openai), or prompts generated "
                                                    "together in one batch (transformers)"),
        llm_timeout: float = typer.Option(120.0, help="seconds per LLM request"),
        llm_retries: int = typer.Option(3, help="retries per LLM request"),
        llm_backoff: float = typer.Option(1.0, help="seconds before the first retry, doubled each time"),
        llm_max_tokens: int = typer.Option(512, help="tokens the LLM may write per profile"),
        llm_temperature: float = typer.Option(0.0, help="sampling temperature (0: greedy, reproducible)"),
        char_budget: int = typer.Option(3000, help="characters of history per user profile"),
        mmrec: bool = typer.Option(False, "--mmrec", help="also write text_feat.npy / image_feat.npy"),
        device: str = typer.Option("cpu", help="torch device"),
        force: bool = typer.Option(False, "--force", help="recompute even if up to date, discarding the checkpoints "
                                                          "of interrupted runs (cached LLM answers in profiles.jsonl "
                                                          "are kept)"),
        progress: bool = typer.Option(True, "--progress/--no-progress", help="progress bars"),
    ) -> None:
        from recgoat.datasets import load
        from recgoat.features.store import FeatureConfig, NothingToEncode, encode_all

        try:
            _check_options_apply(ctx, which)  # before any work
            config = FeatureConfig(
                text_model=text_model, text_template=template, max_chars=max_chars, text_batch_size=batch_size,
                image_model=image_model, image_batch_size=image_batch_size,
                image_cache_dir=str(image_cache) if image_cache else None, profile_backend=backend,
                llm_base_url=llm_base_url, llm_model=llm_model, llm_api_key_env=llm_api_key_env,
                llm_concurrency=llm_concurrency, llm_timeout=llm_timeout, llm_retries=llm_retries,
                llm_backoff=llm_backoff, llm_max_tokens=llm_max_tokens, llm_temperature=llm_temperature,
                profile_char_budget=char_budget, export_mmrec=mmrec, device=device).validate()
            if out is not None:
                _out_folder(out)  # before the dataset is loaded
            if image_cache is not None:
                from recgoat.io import check_folder_path

                check_folder_path(image_cache, "the image cache must be a folder")
            ds = load(dataset)
            try:  # `encode text` / `image` / `users` on a dataset without it: encode_all's error (nothing_to_encode)
                folder = encode_all(ds, _out_folder(out or Path("features") / ds.name), config, which=which,
                                    progress=progress, force=force, reuse_from=reuse_from)
            except NothingToEncode as exc:
                if exc.path is not None or not exc.of_items_file:
                    raise
                # a dataset whose provenance names no items file: named as given on the command line
                raise DataError(dataset, exc.problem) from None
        except RecGOATError as exc:
            _fail(exc)
        _summary(folder, which)

    _hide_options_not_read(command, which)
    return command


def _hide_options_not_read(command, which: tuple[str, ...]) -> None:
    """Hide from ``command``'s help the options its subcommand does not read (per ``_READ_BY``).

    Why hidden rather than left out: `encode text --help` listed --image-batch-size, --llm-* and --char-budget,
    which `encode text` then refused; declared but hidden, they are still parsed, so one given by mistake gets
    `_check_options_apply`'s error naming the subcommands that read it rather than click's bare "No such option".
    Each call of ``_make_command`` makes its own typer.Option objects, so hiding one here hides it in this
    subcommand only."""
    if len(which) != 1:  # `encode all` reads every option
        return
    for name, param in inspect.signature(command).parameters.items():
        if which[0] not in _READ_BY.get(name, which):
            param.default.hidden = True


def _summary(folder: Path, which: tuple[str, ...]) -> None:
    """One line per matrix written: shape, encoder, and the template-made label for profiles."""
    from recgoat.io import read_json

    for kind, name in (("text", "text"), ("image", "image"), ("users", "profile")):
        man_path = folder / f"{name}.json"
        if kind not in which or not man_path.exists():
            continue
        try:
            m = read_json(man_path)
        except (OSError, ValueError) as e:  # the summary of a run that succeeded must not end in a traceback
            typer.echo(f"{kind}: {man_path} unreadable ({e})")
            continue
        if not isinstance(m, dict):
            typer.echo(f"{kind}: {man_path} is not a manifest")
            continue
        line = f"{kind}: {m.get('rows')} x {m.get('dim')} ({m.get('encoder')})"
        if kind == "text" and m.get("empty_texts"):  # these rows all get the empty string's embedding
            line += f"; {plural(m['empty_texts'], 'item')} with no text"
        if m.get("truncated_texts"):  # the model read only their first max_seq_length tokens
            line += f"; {plural(m['truncated_texts'], 'text')} cut at the text model's token limit"
        if kind == "image":
            line += f"; images {m.get('images')}"
        if kind == "users":
            line += " profiles TEMPLATE-MADE (no LLM)" if m.get("template_made") else \
                f" profiles by {m.get('profile_backend')}:{m.get('llm_model')}"
            stats = m.get("profiles") if isinstance(m.get("profiles"), dict) else {}
            if stats.get("cache_records_not_used"):  # another prompt version, model or server: asked again
                line += (f"; {plural(stats['cache_records_not_used'], 'line')} of "
                         f"{m.get('profiles_file', 'profiles.jsonl')} "
                         "(another prompt, model or server) not used")
        typer.echo(line)
    typer.echo(f"features in {folder}")


for _name, _which in _WHICH.items():
    app.command(_name, help=_HELP[_name])(_make_command(_which))


# help= rather than a docstring: typer's rich help keeps a docstring's line breaks in `encode --help`'s list
@app.command("import-mmrec", help="Import MMRec-layout item features (text_feat.npy, image_feat.npy) as a feature "
             "folder with manifests.\n\nEach row is put on its item by SRC's i_id_mapping.csv (without one, only a "
             "dataset whose item ids are the row numbers is accepted).")
def import_mmrec_cmd(src: Path = typer.Argument(..., help="folder with text_feat.npy / image_feat.npy (and MMRec's "
                                                          "i_id_mapping.csv naming each row's item)"),
                     dataset: str = typer.Argument(..., help="dataset the rows belong to"),
                     out: Optional[Path] = typer.Option(None, "--out",
                                                        help="output folder \\[default: features/<dataset>]")) -> None:
    from recgoat.datasets import load
    from recgoat.features.mmrec_io import check_import_source, import_mmrec

    try:
        if out is not None:
            _out_folder(out)
        check_import_source(src)  # import_mmrec's own first check, made before the dataset is loaded
        ds = load(dataset)
        folder = import_mmrec(ds, src, _out_folder(out or Path("features") / ds.name))
    except RecGOATError as exc:
        _fail(exc)
    typer.echo(f"features in {folder}")


@app.command("export-mmrec", help="Write text_feat.npy / image_feat.npy (MMRec's layout) and i_id_mapping.csv "
             "(each row's item) from a feature folder.\n\nInto an MMRec dataset folder the rows follow its own "
             "item numbering. Without --dataset the rows' items are those the folder records (item_ids.json), else "
             "those of the dataset its manifests name (a known name, a folder here, or the MMRec folder imported "
             "from) when its fingerprint matches.")
def export_mmrec_cmd(folder: Path = typer.Argument(..., help="feature folder"),
                     dest: Optional[Path] = typer.Option(None, "--dest", help="folder to write text_feat.npy / "
                                                         "image_feat.npy to \\[default: the same folder]"),
                     dataset: Optional[str] = typer.Option(None, "--dataset", help="the dataset the features were "
                                                           "made for: checked against it, and its item ids name the "
                                                           "rows \\[default: the ids the folder records, else the "
                                                           "dataset its manifests name, when found]")) -> None:
    from recgoat.datasets import load
    from recgoat.features.mmrec_io import check_export_source, export_mmrec

    try:
        check_export_source(folder)  # export_mmrec's own first check, made before --dataset is loaded
        target = _out_folder(dest or folder)
        # without --dataset an older folder's rows are named by the dataset its manifests name, when found: say which
        written = export_mmrec(folder, target, load(dataset) if dataset is not None else None,
                               on_notice=lambda line: typer.echo(line, err=True))
    except RecGOATError as exc:
        _fail(exc)
    typer.echo("wrote " + ", ".join(map(str, written)))


if __name__ == "__main__":
    app()
