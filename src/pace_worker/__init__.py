"""pace-worker: the Pacemaker (ACE) worker of an active-learning pipeline.

Four commands, each a pure function (a request in, a result out) with :mod:`pace_worker.cli`
as the thin command-line layer on top (flags, printing, exit codes):

* ``train`` — :mod:`pace_worker.commands.train`: fit with pacemaker (:mod:`pace_worker.ace.pacemaker_run` runs it in
  a child process, :mod:`pace_worker.ace.pacemaker_child`; :mod:`pace_worker.ace.pacemaker_input`
  builds its input and holds the default basis rule), then ``.yace``, ``.asi``
  (:mod:`pace_worker.ace.activeset`) and metrics; :mod:`pace_worker.algorithms.train_test_split` is the train/test split,
  :mod:`pace_worker.files.iteration_folder` the ``iter_NNN/`` archive, :mod:`pace_worker.files.folder_lock`
  one train per folder.
* ``sample`` — :mod:`pace_worker.commands.sample` (strategies, the γ floor ``gamma_min``, the buffer);
  γ and projections on workers in :mod:`pace_worker.ace.gamma`; the batch D-optimal MaxVol in
  :mod:`pace_worker.algorithms.d_optimal` (numpy).
* ``direct_sample`` — :mod:`pace_worker.commands.direct_sample`; ACE structure features on workers in
  :mod:`pace_worker.ace.descriptors`; PCA, BIRCH (threshold lowering), chemical systems and
  per-cluster picks in :mod:`pace_worker.algorithms.direct_clustering` (scikit-learn estimators).
* ``validate`` — :mod:`pace_worker.commands.validate` (finding the test set and active set, evaluating
  a potential: also used by train); predictions on workers in :mod:`pace_worker.ace.predictions`;
  error metrics in :mod:`pace_worker.algorithms.error_metrics` (numpy) and, from pacemaker's own
  prediction files, :mod:`pace_worker.ace.pacemaker_metrics`.

Shared: :mod:`pace_worker.config` (config.yaml / meta_config.yaml models),
:mod:`pace_worker.files.structures` (reading and checking structures; the geometry rule),
:mod:`pace_worker.files.frames` (extxyz frames split without parsing; pool chunks),
:mod:`pace_worker.parallel.executor` and :mod:`pace_worker.parallel.dask_cluster` (chunks on processes or Dask;
task grouping), :mod:`pace_worker.ace.projections` (pyace B-projections),
:mod:`pace_worker.ace.potentials` (potential files), :mod:`pace_worker.files.atomic_io` (all-or-none
publishing), :mod:`pace_worker.files.output_paths` (outputs never overwrite inputs),
:mod:`pace_worker.errors` (exit codes), :mod:`pace_worker.ace.stack` (lazy pyace import),
:mod:`pace_worker.plots`, :mod:`pace_worker.progress`, :mod:`pace_worker.toy_data`,
:mod:`pace_worker.commands.demo` (the active-learning loop with EMT).
"""

__version__ = "0.1.0"
