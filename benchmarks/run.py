"""The benchmark suite's one command: ``python benchmarks/run.py [--quick | --airflow]``.

It runs ``benchmarks/suite.py`` as the ``benchmarks`` package's module, exactly as
``python -m benchmarks.suite`` from the repository's root would, so the suite's modules
import each other as ``benchmarks.*`` wherever this file is started from. See suite.py
for the options.
"""

import runpy
import sys
from pathlib import Path

if __name__ == "__main__":
    # A script's directory is sys.path[0]; `python -m` puts the working directory there
    # instead. The repository's root in its place makes `benchmarks` the package it is.
    sys.path[0] = str(Path(__file__).resolve().parent.parent)
    runpy.run_module("benchmarks.suite", run_name="__main__", alter_sys=True)
