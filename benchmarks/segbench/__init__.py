"""segbench: the benchmark harness behind ``python benchmarks/run.py``.

Where to start reading:

* cli.py: the options and main(), which runs the steps below in order
* runner.py: Bench, the core: temporary directory, servers, test files, the round-robin loop,
  one measured run (execute), and the medians per case (summarize)
* scenarios/: one module per scenario family; each scenario builds its cases, runs one case,
  sets its targets and renders its table
* servers.py and pyserver.py: nginx and the fallback Python server; measure.py: wall time,
  CPU and peak RSS of one command; tools.py: finding the tools and their command lines
* checks.py, report.py, charts.py: PASS/MISS, results.json and the Markdown, the PNGs
* units.py: sizes and formatting; records.py: the dataclasses that go into results.json
* pyfetch.py: the ThreadPool + requests peer of the batch scenarios (a standalone script)
"""
