"""``python -m recgoat``: the ``recgoat`` command (:func:`recgoat.cli.entry`, the console script of
pyproject.toml), for an environment whose scripts folder is not on PATH or to pick the interpreter."""
from recgoat.cli import entry

if __name__ == "__main__":
    entry()
