"""`python -m lib.nbclean < in.ipynb > out.ipynb`: the git clean filter that keeps saved notebooks out of `git status`.

JupyterLab saves outputs, execution counts, cell ids, widget state and its own metadata into the file; git stores
what this filter prints instead: the cells' sources and tags, in the repository's committed form (nbformat 4.4,
one-space JSON, the minimal kernel metadata), so a notebook that was only run and saved reads as unchanged. Edits
to a cell's source are kept: they are real changes. `make setup` registers it (`.gitattributes` names it).
"""
import json
import sys

KERNEL = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
          "language_info": {"name": "python"}}


def clean_cell(cell):
    """A cell as committed: type, tags only, source; code cells with no count and no outputs."""
    tags = cell.get("metadata", {}).get("tags")
    out = {"cell_type": cell["cell_type"], "metadata": {"tags": tags} if tags else {}, "source": cell["source"]}
    if cell["cell_type"] == "code":
        out.update(execution_count=None, outputs=[])
    elif "attachments" in cell:
        out["attachments"] = cell["attachments"]
    return out


def clean(nb):
    """The committed form of a notebook dict."""
    return {"cells": [clean_cell(c) for c in nb["cells"]], "metadata": KERNEL, "nbformat": 4, "nbformat_minor": 4}


def dumps(nb):
    """JSON as the repository's notebooks are written (what json.load/dump round-trips byte for byte)."""
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def main():
    """Filter stdin to stdout; a file that is not a notebook passes through unchanged."""
    text = sys.stdin.read()
    try:
        nb = json.loads(text)
        for cell in nb["cells"]:
            if isinstance(cell["source"], str):  # nbformat allows one string; the repository stores lines
                cell["source"] = cell["source"].splitlines(keepends=True)
        sys.stdout.write(dumps(clean(nb)))
    except (ValueError, KeyError, TypeError):
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
