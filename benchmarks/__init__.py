"""The xcombus benchmark suite (not installed with the package; run from the repository).

    python benchmarks/run.py [--quick | --airflow]   # every figure, then docs/benchmarks.md

``suite.py`` orchestrates the figures of ``bench_pipeline.py``, ``bench_backlog.py``,
``bench_history.py`` (history from the version index, the index's size),
``bench_visible.py`` and the SQL baseline ``baseline_sql.py``; ``figures.py`` is the one
registry of figure ids, labels and targets; ``report.py`` (with ``plots.py``,
``history.py`` and ``airflow_report.py``) renders the results; ``bench_airflow.py`` measures
inside Apache Airflow; ``profile_paths.py`` profiles the hot paths. ``experiments/`` holds
the experiments whose conclusions ``benchmarks/analysis.md`` and the code still cite.
"""
