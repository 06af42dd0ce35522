"""lib's progress bars: text, not widgets, so a saved notebook reopens without "Error displaying widget".

tqdm.auto draws ipywidgets in JupyterLab, but a bar closed when done (leave=False, every batch bar) leaves an output
pointing at a widget model that no longer exists; reopened, it says "model not found", saved widget state or not.
Text bars are plain stream output: they read the same in the live session, after a reopen and in papermill's copies.
"""
from tqdm.std import tqdm  # noqa: F401  (re-exported)
