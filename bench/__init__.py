"""Speed benchmarks: each script prints the machine, one table, and last a one-line summary of ratios against the
naive pipeline measured in the same process. `python -m bench` runs them all; `python -m bench.<name>` one."""
