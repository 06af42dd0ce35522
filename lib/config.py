"""The parameters cell into one checked `cfg` dict: names papermill injected, types, range rules."""
import ast
import math
import types
import typing


def _type_ok(value, annotation):
    """True if value fits a simple annotation (int, float, str, bool, list, dict, Optional, Union)."""
    if annotation is typing.Any:
        return True
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if origin in (list, tuple):
        element = (typing.get_args(annotation) or (typing.Any,))[0]  # list[int]: every element an int
        return isinstance(value, (list, tuple)) and all(_type_ok(v, element) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, annotation)


def type_name(annotation):
    """An annotation as the parameters cell writes it: int, list[int], Optional[int]."""
    if typing.get_args(annotation) or not hasattr(annotation, "__name__"):
        return str(annotation).replace("typing.", "")
    return annotation.__name__


def injected_unknown_names(namespace, declared):
    """Names papermill injected that the parameters cell does not declare (typos like `epoch=3`)."""
    return [n for n in injected_names(namespace) if n not in declared]


def injected_names(namespace):
    """Names papermill assigned in its injected '# Parameters' cell (what -p, -y and -f gave), in order.

    Read from the kernel's history; where the runner keeps none (nbval), from `__papermill_injected__`, a list the
    injected cell may set (tests/conftest.py's smoke runs do).
    """
    history = namespace.get("In")
    if not isinstance(history, list) or len(history) < 2:
        # a runner that keeps no history (nbval) names them in the injected cell itself
        return list(namespace.get("__papermill_injected__", []))
    # papermill puts its assignments in a cell starting with '# Parameters' just before this one.
    previous = history[-2]
    if not previous.lstrip().startswith("# Parameters"):
        return []
    try:
        tree = ast.parse(previous)
    except SyntaxError:
        return []
    return [t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets if isinstance(t, ast.Name)]


def _parse_container(value, annotation):
    """A list/dict parameter given as a string (papermill's -p passes strings): its JSON/YAML reading, else value."""
    wanted = typing.get_origin(annotation) or annotation
    if not isinstance(value, str) or wanted not in (list, tuple, dict):
        return value
    import yaml
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError:
        return value
    return parsed if isinstance(parsed, (list, tuple) if wanted is not dict else dict) else value


def range_problem(name, value, rule):
    """The complaint if a number breaks `rule` (">= 1", "> 0", "<= 1", "< 1", "[0, 1]", "(0, 1]", ...), else None.

    A list must satisfy it in every element; None (an Optional's "off") and non-numbers pass (types are checked
    elsewhere).
    """
    if isinstance(value, (list, tuple)):
        bad = [v for v in value if range_problem(name, v, rule)]
        if not bad:
            return None
        return (f"parameter {name!r} = {value!r}: {bad[0]!r} breaks the rule, every element should be "
                + (f"in {rule}" if rule.lstrip()[0] in "[(" else rule))
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    text = rule.replace(" ", "")
    if text[0] in "[(":
        low, high = (float(x) for x in text[1:-1].split(","))
        ok = (low <= value if text[0] == "[" else low < value) and (value <= high if text[-1] == "]" else value < high)
        rule = "in " + rule
    else:
        op = text[:2] if text[1:2] == "=" else text[:1]
        if op not in (">=", ">", "<=", "<"):
            raise ValueError(f"range rule {rule!r} of {name!r} is not understood: use '>= 1', '> 0', '[0, 1]' ...")
        bound = float(text[len(op):])
        ok = {">=": value >= bound, ">": value > bound, "<=": value <= bound, "<": value < bound}[op]
    return None if ok and math.isfinite(value) else f"parameter {name!r} = {value!r} should be {rule}"


def build_cfg(namespace, annotations, ranges=None):
    """Validate the parameters cell's names, types and ranges and return them as one plain `cfg` dict.

    `annotations` is the notebook's `__annotations__`, i.e. the parameters cell's `name: type = value` lines;
    `ranges` maps parameter names to the rule their numbers must follow (`range_problem`), declared once per notebook.
    """
    declared = dict(annotations)
    problems = [f"unknown parameter {n!r}; this notebook takes: {', '.join(declared)}"
                for n in injected_unknown_names(namespace, declared)]
    for name, annotation in declared.items():
        value = namespace.get(name)
        parsed = _parse_container(value, annotation)
        if parsed is not value:
            value = namespace[name] = parsed
        if annotation is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
            namespace[name] = value
        if not _type_ok(value, annotation):
            expected = type_name(annotation)
            hint = (" (papermill's -p passes a string: give a list or dict as JSON/YAML text, e.g. -p "
                    f"{name} '[1, 2]', or with -y '{name}: [1, 2]' or in a YAML file with -f)"
                    if isinstance(value, str) and (typing.get_origin(annotation) or annotation) in (list, dict) else "")
            problems.append(f"parameter {name!r} = {value!r} should be of type {expected}{hint}")
        elif name in (ranges or {}):
            problems.append(range_problem(name, value, ranges[name]))
    problems += [f"a range is declared for {n!r}, which is no parameter" for n in set(ranges or {}) - set(declared)]
    problems = [p for p in problems if p]
    if problems:
        raise ValueError("bad notebook parameters:\n  " + "\n  ".join(problems) +
                         "\nFix the value in papermill's -p/-f arguments (configs/*.yaml) or in the parameters cell.")
    return {name: namespace[name] for name in declared}


def check_choices(name, chosen, known):
    """Fail unless `chosen` is a non-empty list of distinct names from `known`."""
    if not chosen or len(set(chosen)) != len(chosen) or set(chosen) - set(known):
        raise ValueError(f"{name}={chosen!r}: choose one or more of {list(known)}, each at most once")
