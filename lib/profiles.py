"""One switch per notebook: `profile = "demo"` takes configs/<notebook>/demo.yaml's values.

One precedence, as nanoGPT's configurator has it, the last one winning: the parameters cell's values (as the cell
ran: edited or not, saved or not), then the chosen profile's file, then what papermill injects (`-p`, `-y`, `-f`).
The parameters cell holds the study's full-run values (`profile = "full"`: no file). So with a profile chosen, the
profile's values replace the cell's, edited or not; to try a value of your own, set `profile = "full"` and edit
the cell, or inject it (`-p epochs 5`). The print says what the profile replaced.
"""
import glob
import os

import yaml

from .config import injected_names
from .lab import keep_failures_in_view
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


def where_from(cell, final, profile, applied, injected):
    """Lines saying where each value not left at the parameters cell's came from, for a student to read."""
    lines = []
    for name in final:
        if name in injected:
            lines.append((name, final[name], "injected by papermill"))
        elif name in applied and applied[name] != cell.get(name):
            lines.append((name, final[name], f"{profile}.yaml, replaces {cell.get(name)!r}"))
    width = max((len(f"{n} = {v!r}") for n, v, _ in lines), default=0)
    return [f"  {f'{n} = {v!r}':<{width}}   ({why})" for n, v, why in lines]


def apply_profile(namespace, notebook):
    """Put the chosen profile's values into the notebook's namespace, except names papermill injected.

    One precedence, the last one winning: the parameters cell as it ran, then the profile's file, then papermill's
    injection. Prints where each value that is not the cell's own came from, and returns {name: value} of what
    the profile set. A key the parameters cell does not declare, or a value of the wrong type, stops it naming the
    file. In a notebook kernel it also has every later failing cell bring its error into view (lib.lab).
    """
    keep_failures_in_view()  # first: a wrong profile name below is already a failure to bring into view
    profile = namespace.get("profile", FULL)
    values = load_profile(notebook, profile)
    if values:
        check_profile_values(values, namespace.get("__annotations__") or {}, profile_path(notebook, profile))
    injected = set(injected_names(namespace))
    cell = {name: namespace.get(name) for name in values}  # as the cell ran (edited or not, saved or not)
    applied = {k: v for k, v in values.items() if k not in injected}
    namespace.update(applied)
    names = dict.fromkeys([*(namespace.get("__annotations__") or {}), *values, *sorted(injected)])
    final = {n: namespace.get(n) for n in names if n in injected or n in applied}
    lines = where_from(cell, final, profile, applied, injected)
    source = "the parameters cell" + (f", then configs/{notebook}/{profile}.yaml" if values else "")
    print(f"where each value came from ({source}, then papermill; the last one wins):")
    print("\n".join(lines) if lines else "  every value is the parameters cell's")
    return applied
