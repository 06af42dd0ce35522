"""The failing cell in view after Run All in JupyterLab.

Run All makes the last cell active and scrolls there before the first cell has run, and JupyterLab does not scroll
back when a cell fails (jupyterlab/jupyterlab#8714), so a student saw the empty conclusion while the error sat
twenty cells above. A cell that fails therefore also shows a small script output that scrolls the end of its own
error into view. JupyterLab runs scripts only in outputs it trusts (those made in the current session, or in a
notebook the user saved); elsewhere (an untrusted reopen, papermill's copy, nbconvert's text) the text line shows.
"""

SCRIPT = """
setTimeout(() => {
  const output = element.closest('.jp-OutputArea-child') || element;
  output.scrollIntoView({block: 'end', behavior: 'smooth'});
}, 500);
"""
NOTE = "^ this cell failed: the error above stopped the run"


def show_failure(result):
    """After a cell that raised (not a Ctrl-C), display the script and note that bring its error into view."""
    error = result.error_in_exec or result.error_before_exec
    if error is None or isinstance(error, KeyboardInterrupt):
        return
    from IPython.display import display  # only a notebook kernel gets here

    display({"application/javascript": SCRIPT, "text/plain": NOTE}, raw=True)


def keep_failures_in_view():
    """In a notebook kernel, register show_failure after every cell, once; elsewhere do nothing."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None or "ipykernel" not in type(shell).__module__:
        return
    if show_failure not in shell.events.callbacks["post_run_cell"]:
        shell.events.register("post_run_cell", show_failure)
