"""pace-worker: the Pacemaker (ACE) worker of an active-learning pipeline.

Commands: ``train`` (this module's :func:`pace_worker.train.train`), with ``sample``,
``direct_sample`` and ``validate`` to come. Each command is a pure function returning a
result object; :mod:`pace_worker.cli` is the thin command-line layer on top.
"""

__version__ = "0.1.0"
