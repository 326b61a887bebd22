"""pace-worker: the Pacemaker (ACE) worker of an active-learning pipeline.

Four commands (``train``, ``sample``, ``direct_sample``, ``validate``) and a ``demo``. Each is a
pure function, a request in and a result out, in :mod:`pace_worker.commands`;
:mod:`pace_worker.cli` is the thin layer on top (flags, printing, exit codes). The subpackage says
what kind of module a file is:

``commands/`` — one module per command: its request, its steps, its report, its result.
    ``train.py``, ``sample.py``, ``direct_sample.py``, ``validate.py``, ``demo.py`` (the
    active-learning loop with EMT as the labeller); ``train_schedule.py`` **``train`` within a
    budget** (validation split, basis sized to data and budget, linear ACE, what is published).

``ace/`` — everything that talks to pyace or pacemaker.
    ``pacemaker_run.py`` runs a fit in a child process (``pacemaker_child.py``: threads, device,
    the ``fit.max_time`` budget, a whole copy of the interim potential after each step);
    ``pacemaker_input.py`` writes pacemaker's ``input.yaml``;
    ``default_basis.py`` is the default basis and **its size rule**; ``pacemaker_metrics.py``
    reads pacemaker's own metrics files; ``potentials.py`` potential files (.yaml/.yace);
    ``activeset.py`` active sets (.asi); ``projections.py`` B-projections; on workers:
    ``gamma.py`` (γ of pool structures, for ``sample``), ``descriptors.py`` (structure features,
    for ``direct_sample``), ``predictions.py`` (energies/forces), ``labelled_evaluation.py``
    (a test set read, checked and evaluated chunk by chunk, for ``validate`` and ``train``);
    ``potential_errors.py`` the errors of a potential on labelled structures (``validate``'s and
    ``train``'s numbers); ``linear_ace.py`` linear ACE (design rows from B-projections and their
    gradients; the FS potential of the coefficients).

``algorithms/`` — numpy / scikit-learn only: no files, no pyace (but its MaxVol routine).
    ``sample_strategies.py`` **the strategies of ``sample``** (``maxvol``, ``max_gamma``,
    ``gamma_window``, ``random``: what each admits, buffers and selects; the γ floor);
    ``d_optimal.py`` batch D-optimal (MaxVol) selection; ``direct_clustering.py`` DIRECT's
    steps as estimators (weighted PCA, **BIRCH with threshold lowering**); ``cluster_picks.py``
    picks per cluster and their coverage (numpy only: the CLI's choices load no scikit-learn);
    ``direct_allocation.py`` how many clusters each chemical system and kind of periodicity gets;
    ``direct_strata.py`` ``StratifiedDirect``, **DIRECT as one estimator** per chemical system
    and kind of periodicity (parameters in ``__init__``, fitted
    ``labels_``/``picks_``/``systems_``);
    ``train_test_split.py`` **the train/test and validation splits**; ``error_metrics.py`` error
    metrics; ``extrapolation_grade.py`` **γ** (the one formula); ``streaming_least_squares.py``
    weighted nested least squares from streamed triangular factors.

``files/`` — structures and files on disk.
    ``structures.py`` reading and checking labelled structures (the geometry rule, the pool
    rule); ``frame_text.py`` extxyz frame texts split without parsing; ``frames.py`` pool chunks
    and their parsing; ``c_extxyz.py`` libAtoms' C parser, giving ASE's structures; ``compression.py``;
    ``safe_pickle.py`` pacemaker DataFrames without running code; ``safe_yaml.py`` no alias bombs;
    ``discovery.py`` **which potential, active set and test set a command uses** when none is
    named; ``atomic_io.py`` all-or-none publishing; ``output_paths.py`` outputs never overwrite
    inputs; ``iteration_folder.py`` the ``iter_NNN/`` archive; ``folder_lock.py`` one ``train``
    per folder.

``parallel/`` — where chunks of work run.
    ``executor.py`` chunks on local processes or a Dask cluster (**Dask task grouping**:
    ``chunks_per_task``); ``worker_state.py`` what a worker loads once; ``dask_cluster.py`` a
    local Dask cluster for tests and benchmarks; ``slurm_cluster.py`` Dask workers as Slurm jobs
    for the length of one command (meta_config ``dask.cluster: slurm``).

Shared at the top: ``config.py`` (config.yaml and meta_config.yaml as pydantic models),
``errors.py`` (exit codes, "did you mean"), ``stack.py`` (pyace imported without its side effects),
``fingerprint.py``, ``interrupts.py`` (SIGTERM / SIGINT), ``plots.py``, ``progress.py``,
``toy_data.py`` (EMT-labelled data).
No module below ``commands/`` imports a command module.
"""

__version__ = "0.1.0"
