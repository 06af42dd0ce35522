"""`python -m bench`: every benchmark, each in its own process (fresh threads and memory), then the summaries."""
import subprocess
import sys
import time

BENCHMARKS = ("input_pipeline", "train_step", "end_to_end")


def main():
    started, summaries = time.perf_counter(), []
    for name in BENCHMARKS:
        result = subprocess.run([sys.executable, "-m", f"bench.{name}", *sys.argv[1:]], stdout=subprocess.PIPE,
                                text=True)
        print(result.stdout, flush=True)
        summaries += [line for line in result.stdout.splitlines() if line.startswith("SUMMARY")]
        if result.returncode:
            summaries.append(f"SUMMARY bench.{name} FAILED (exit {result.returncode})")
    print(f"== all benchmarks in {time.perf_counter() - started:.0f} s")
    print("\n".join(summaries))
    return 0 if all("FAILED" not in s for s in summaries) else 1


if __name__ == "__main__":
    sys.exit(main())
