"""One switch per notebook: `profile = "demo"` takes configs/<notebook>/demo.yaml's values; explicit ones win.

The parameters cell holds the study's full-run values (`profile = "full"`). Any other profile names a papermill
parameter file beside the notebook's other configs, so a student flips one line in JupyterLab, a grader passes
`-p profile demo`, and both get the same values as `papermill -f configs/<notebook>/demo.yaml`. A value given
explicitly wins: one papermill injected (`-p`, `-y`, `-f`), or one that differs from the committed notebook's
parameters cell (an edit in JupyterLab not yet saved, or an injection nbval's history-less run cannot show).
"""
import ast
import glob
import json
import os

import yaml

from .config import injected_names
from .utils import repo_path

FULL = "full"


def profile_path(notebook, profile):
    """configs/<notebook>/<profile>.yaml under the repository root."""
    return repo_path(os.path.join("configs", notebook, f"{profile}.yaml"))


def available_profiles(notebook):
    """'full' (the parameters cell as written) and the name of every configs/<notebook>/*.yaml."""
    files = glob.glob(os.path.join(glob.escape(repo_path(os.path.join("configs", notebook))), "*.yaml"))
    return [FULL] + sorted(os.path.splitext(os.path.basename(f))[0] for f in files)


def load_profile(notebook, profile):
    """The values a profile sets ({} for 'full'), failing with the profiles there are."""
    if profile == FULL:
        return {}
    path = profile_path(notebook, profile)
    if not isinstance(profile, str) or not os.path.isfile(path):
        raise ValueError(f"profile={profile!r}: no {os.path.relpath(path, repo_path('.'))}. "
                         f"Choose one of {available_profiles(notebook)}.")
    with open(path, encoding="utf-8") as fh:
        values = yaml.safe_load(fh) or {}
    if not isinstance(values, dict) or "profile" in values:
        raise ValueError(f"{path} should map parameter names to values (and not set 'profile' itself).")
    return values


def notebook_defaults(notebook):
    """The literal values of the parameters cell of notebooks/<notebook>.ipynb as it is on disk ({} if unreadable)."""
    try:
        with open(repo_path(os.path.join("notebooks", f"{notebook}.ipynb")), encoding="utf-8") as fh:
            cells = json.load(fh)["cells"]
        cell = next(c for c in cells if "parameters" in c.get("metadata", {}).get("tags", []))
        tree = ast.parse("".join(cell["source"]))
    except (OSError, ValueError, KeyError, StopIteration, SyntaxError):
        return {}
    defaults = {}
    for node in tree.body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.value is not None:
            try:
                defaults[node.target.id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    return defaults


def explicit_names(namespace, notebook):
    """Names given explicitly: injected by papermill, or holding another value than the notebook's default."""
    defaults = notebook_defaults(notebook)
    changed = {n for n, v in defaults.items() if n in namespace and namespace[n] != v}
    return set(injected_names(namespace)) | changed


def check_profile_values(values, annotations, path):
    """Fail naming the file and the key if a profile sets a name the notebook does not take, or a mistyped value."""
    from .config import _parse_container, _type_ok, type_name
    if not annotations:
        return
    unknown = sorted(set(values) - set(annotations))
    if unknown:
        raise ValueError(f"{path}: unknown key {unknown[0]!r} (value {values[unknown[0]]!r:.60}); the notebook takes: "
                         f"{', '.join(a for a in annotations if a != 'profile')}. Fix the spelling in the file.")
    for name, value in values.items():
        annotation = annotations[name]
        parsed = _parse_container(value, annotation)
        if annotation is float and isinstance(parsed, int) and not isinstance(parsed, bool):
            continue
        if not _type_ok(parsed, annotation):
            raise ValueError(f"{path}: key {name!r} is {value!r:.60}, it should be of type "
                             f"{type_name(annotation)}. Fix the value in the file.")


def apply_profile(namespace, notebook):
    """Put the chosen profile's values into the notebook's namespace, except names papermill injected.

    Returns {name: value} of what the profile set. A key the parameters cell does not declare, or a value of the
    wrong type, stops it naming the file.
    """
    profile = namespace.get("profile", FULL)
    values = load_profile(notebook, profile)
    if values:
        check_profile_values(values, namespace.get("__annotations__") or {}, profile_path(notebook, profile))
    explicit = explicit_names(namespace, notebook)
    applied = {k: v for k, v in values.items() if k not in explicit}
    namespace.update(applied)
    if values:
        kept = sorted(set(values) & explicit)
        print(f"profile {profile!r}: {len(applied)} values from configs/{notebook}/{profile}.yaml"
              + (f"; given explicitly, kept: {', '.join(kept)}" if kept else ""))
    return applied
