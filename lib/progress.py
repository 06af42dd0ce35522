"""lib's progress bars: text, not widgets, so a saved notebook reopens without "Error displaying widget".

tqdm.auto draws ipywidgets in JupyterLab, but a bar closed when done (leave=False, every batch bar) leaves an output
pointing at a widget model that no longer exists; reopened, it says "model not found", saved widget state or not.
Text bars are plain stream output: they read the same in the live session, after a reopen and in papermill's copies.
They go to stdout, beside the per-epoch lines: JupyterLab shows stderr on a pink background, so a bar there looked
like an error, and every cleared bar left an empty pink band behind.
"""
import os
import sys

from tqdm.std import tqdm as text_tqdm


def env_disabled():
    """True when the TQDM_DISABLE environment variable asks for no bars (lib.runbook sets it for headless runs)."""
    return os.environ.get("TQDM_DISABLE", "").strip().lower() not in ("", "0", "false", "no")


def tqdm(*args, disable=False, **kwargs):
    """A text bar; TQDM_DISABLE turns it off even where the caller passes disable=False.

    tqdm itself lets an explicit argument win over the environment, so a papermill run would otherwise save every
    refresh of every bar in the executed notebook (megabytes of carriage returns).
    """
    kwargs.setdefault("file", sys.stdout)  # looked up per bar: a notebook kernel replaces sys.stdout
    return text_tqdm(*args, disable=disable or env_disabled(), **kwargs)
