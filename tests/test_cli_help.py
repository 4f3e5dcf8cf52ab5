"""`recgoat … --help` as a new user reads it: each `encode` subcommand lists the options it reads, and only those.

A walkthrough found `encode text --help` listing --image-batch-size, --llm-* and --char-budget, which
`encode text` then refused. Rendered through the `recgoat` app, as the command line shows it."""
import os
import re

os.environ["HF_HUB_OFFLINE"] = "1"

import pytest  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from recgoat.cli import app  # noqa: E402

COMMON = ["--out", "--mmrec", "--device", "--force", "--progress", "--help"]
TEXT = ["--text-model", "--template", "--max-chars", "--batch-size", "--reuse-from"]
IMAGE = ["--image-model", "--image-batch-size", "--image-cache", "--reuse-from"]
LLM = ["--llm-base-url", "--llm-model", "--llm-api-key-env", "--llm-concurrency", "--llm-timeout", "--llm-retries",
       "--llm-backoff", "--llm-max-tokens", "--llm-temperature"]
USERS = ["--text-model", "--batch-size", "--backend", *LLM, "--char-budget"]  # profiles are embedded by the text model
READS = {"text": TEXT, "image": IMAGE, "users": USERS, "all": [*TEXT, *IMAGE, *USERS]}
# a valid value for each option taking one (LLM options need an LLM backend: --backend openai)
VALUES = {"--text-model": "x", "--template": "{title}", "--max-chars": "900", "--batch-size": "3",
          "--image-model": "x", "--image-batch-size": "3", "--image-cache": "cache", "--reuse-from": "feats", "--backend": "openai",
          "--llm-base-url": "http://127.0.0.1:9/v1", "--llm-model": "m", "--llm-api-key-env": "KEY",
          "--llm-concurrency": "2", "--llm-timeout": "5", "--llm-retries": "1", "--llm-backoff": "1",
          "--llm-max-tokens": "64", "--llm-temperature": "0", "--char-budget": "2000", "--device": "cpu"}


def help_text(*args: str, columns: int = 80) -> str:
    res = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": str(columns)})
    assert res.exit_code == 0, res.output
    return res.output


def listed_options(text: str) -> list[str]:
    """The option names heading the rows of the help's Options panel (a row's continuation lines start blank)."""
    panel = text.split("─ Options ")[1].split("╰")[0]
    return re.findall(r"^│ (?:\*\s+)?(--[\w-]+)", panel, flags=re.M)


@pytest.mark.parametrize("sub", READS)
def test_encode_help_lists_exactly_the_options_the_subcommand_reads(sub):
    expected = {*READS[sub], *COMMON}
    assert sorted(listed_options(help_text("encode", sub))) == sorted(expected)


@pytest.mark.parametrize("sub", READS)
def test_every_option_an_encode_help_lists_is_accepted(sub, tmp_path):
    """All listed options given at once: the command gets past its option checks to the dataset."""
    args = []
    for opt in listed_options(help_text("encode", sub)):
        if opt in ("--out", "--image-cache"):
            args += [opt, str(tmp_path / opt.strip("-"))]
        elif opt != "--help":
            args += [opt, VALUES[opt]] if opt in VALUES else [opt]  # the rest are flags
    res = CliRunner().invoke(app, ["encode", sub, "no-such-dataset", *args])
    assert res.exit_code == 1 and "no-such-dataset" in res.output, res.output
    assert "does not read" not in res.output and "apply to" not in res.output


@pytest.mark.parametrize("sub", ["text", "image", "users"])
def test_options_an_encode_help_leaves_out_are_refused_naming_who_reads_them(sub, tmp_path):
    """Left out of the help, still named by the refusal (not click's bare "No such option")."""
    for opt in sorted({*READS["all"]} - {*READS[sub]}):
        res = CliRunner().invoke(app, ["encode", sub, "no-such-dataset", opt, VALUES[opt]])
        assert res.exit_code == 1 and f"`encode {sub}` does not read {opt} (" in res.output, res.output


# ---------------------------------------------------------------------------------------------- every command's help
def command_paths() -> list[tuple[list[str], object]]:
    """Every command and group of `recgoat` (the root too), as the words that name it and its click command."""
    import typer

    def walk(cmd, path):
        yield path, cmd
        for name, sub in getattr(cmd, "commands", {}).items():
            yield from walk(sub, [*path, name])

    return list(walk(typer.main.get_command(app), []))


PATHS = command_paths()


@pytest.mark.parametrize("path,cmd", PATHS, ids=[" ".join(p) or "recgoat" for p, _ in PATHS])
def test_help_at_80_columns_shows_every_option_whole(path, cmd):
    """No option name cut to `--no-exclude-se…` (rich shrinks the columns of a table out of room), no flag shown
    as taking a value (`--json <bool>`), no reStructuredText ``quotes`` (the help is rich text)."""
    text = help_text(*path)
    assert not re.search(r"-[\w-]*…", text), text
    assert "<bool>" not in text and "``" not in text, text
    for param in cmd.params:
        if getattr(param, "hidden", False) or param.param_type_name != "option":
            continue
        for opt in [*param.opts, *param.secondary_opts]:
            assert re.search(rf"(?<![\w-]){re.escape(opt)}(?![\w…-])", text), f"{opt} not shown whole:\n{text}"


@pytest.mark.parametrize("path,cmd", PATHS, ids=[" ".join(p) or "recgoat" for p, _ in PATHS])
def test_help_texts_have_no_line_break_inside_a_paragraph(path, cmd):
    """typer's rich help keeps a single line break (in command lists, and past a help's first paragraph), so a
    docstring wrapped in the source cut its sentences at every width: `--set` at one line's end,
    `models.MODEL.params.NAME=VALUE` alone on the next. Paragraphs are separated by a blank line, nothing else."""
    import inspect

    texts = [cmd.help or "", *(getattr(p, "help", None) or "" for p in cmd.params)]
    for t in texts:
        assert not re.search(r"(?<!\n)\n(?!\n)", inspect.cleandoc(t)), repr(t)


def test_models_show_help_keeps_the_set_example_on_one_line():
    text = help_text("models", "show", columns=120)
    assert "`--set models.MODEL.params.NAME=VALUE`" in text
