"""The failing cell in view after Run All in JupyterLab.

Run All makes the last cell active and scrolls there before the first cell has run, and JupyterLab does not scroll
back when a cell fails (jupyterlab/jupyterlab#8714), so a student saw the empty conclusion while the error sat
twenty cells above. A cell that fails therefore also shows a small script output that scrolls the end of its own
error into view. JupyterLab runs scripts only in outputs it trusts (those made in the current session, or in a
notebook the user saved); where no script runs (an untrusted reopen, papermill's copy read as text) the note shows.
The script acts only within a minute of the failure, so a saved notebook reopened, or nbconvert's HTML of a failed
run, does not jump to it.
"""
import time

# a block: in nbconvert's HTML every script shares one global scope and one global `element`, so keep ours now
SCRIPT = """{{
  const output = element;
  if (Date.now() - {failed_ms} < 60000) {{
    setTimeout(() => (output.closest('.jp-OutputArea-child') || output).scrollIntoView({{block: 'end'}}), 500);
  }}
}}"""
NOTE = "^ this cell failed: the error above stopped the run"
NOT_FAILURES = (KeyboardInterrupt, SystemExit)  # the student stopped it, or the code ended the run on purpose


def show_failure(result):
    """After a cell that raised, display the script and note that bring its error into view."""
    if result is None:  # ipykernel passes None for an interrupted top-level await
        return
    error = result.error_in_exec if result.error_in_exec is not None else result.error_before_exec
    if error is None or isinstance(error, NOT_FAILURES):
        return
    from IPython.display import display  # only a notebook kernel gets here

    script = SCRIPT.format(failed_ms=int(time.time() * 1000))
    display({"application/javascript": script, "text/plain": NOTE}, raw=True)


def keep_failures_in_view():
    """In a notebook kernel, register show_failure after every cell, once; elsewhere do nothing."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None or "ipykernel" not in type(shell).__module__:
        return
    # by name, not identity: a reloaded lib.lab (autoreload) brings a new function object
    names = {(getattr(f, "__module__", ""), getattr(f, "__qualname__", "")) for f in
             shell.events.callbacks["post_run_cell"]}
    if (show_failure.__module__, show_failure.__qualname__) not in names:
        shell.events.register("post_run_cell", show_failure)
