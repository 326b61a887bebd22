"""Child process of a fit: set device and threads before TensorFlow starts, then run pacemaker.

Started by :mod:`pace_worker.ace.pacemaker_run` as ``python -m pace_worker.ace.pacemaker_child <pacemaker args>``
with the settings in the environment variable ``PACE_WORKER_CHILD`` (JSON). Writes the
devices TensorFlow saw to ``device.json`` in the working folder; exits with status 3 when a
GPU was required (``device: gpu``) and TensorFlow sees none.

pacemaker calls :func:`step_callback` after every optimizer step (``fit.callbacks``, after its own
callback that rewrote ``interim_potential_<cycle>.yaml`` in place). It keeps a whole copy of that
interim potential (``interim_potential_<cycle>.whole.yaml``: copied under a temporary name, then
renamed), so a run stopped at any moment, even while pacemaker wrote the interim potential, can be
resumed from the last step's coefficients; and it keeps the wall-time budget (``deadline`` in
``PACE_WORKER_CHILD``, seconds since the epoch): past the deadline it raises ``StopIteration``,
which SciPy's ``minimize`` takes as "stop here" (the same way pacemaker's own early stopping ends
a fit): pacemaker then finishes as after a normal fit (core repulsion, ``output_potential.yaml``,
predictions). It records the stop in ``budget_stop.json``.
"""
import importlib
import json
import os
import shutil
import sys
import time

NO_GPU_EXIT = 3
STEP_CALLBACK = "pace_worker.ace.pacemaker_child.step_callback"
BUDGET_STOP_FILE = "budget_stop.json"
DEVICE_LINE = "pace-worker device: "  # the fit process's device line, forwarded to the worker's log


def keep_whole_interim_copy(cycle: int) -> None:
    """Copy the interim potential pacemaker has just written, under a temporary name, then rename
    (:func:`pace_worker.files.atomic_io.atomic_output`). A copy that cannot be written (a full disk)
    leaves the previous one and does not stop the fit."""
    from pace_worker.errors import DiskFull
    from pace_worker.files.atomic_io import atomic_output
    from pace_worker.files.iteration_folder import interim_name, whole_interim_name

    if not os.path.isfile(interim_name(cycle)):
        return
    try:
        with atomic_output(whole_interim_name(cycle)) as tmp:
            shutil.copyfile(interim_name(cycle), tmp)
    except (OSError, DiskFull) as exc:
        print(f"pace-worker: could not keep a whole copy of {interim_name(cycle)} ({exc}); the fit goes on",
              file=sys.stderr, flush=True)


def step_callback(basis_config=None, current_fit_iteration=0, current_fit_cycle=0, current_ladder_step=0,
                  **_) -> None:
    """pacemaker callback after every optimizer step: keep a whole copy of the interim potential; stop
    the optimizer at the first step past the deadline."""
    keep_whole_interim_copy(int(current_fit_cycle))
    deadline = json.loads(os.environ.get("PACE_WORKER_CHILD", "{}")).get("deadline")
    if deadline is None or time.time() < float(deadline):
        return
    from pace_worker.files.atomic_io import write_json_atomic

    write_json_atomic(BUDGET_STOP_FILE, {"optimizer_steps": int(current_fit_iteration) + 1,
                                         "fit_cycle": int(current_fit_cycle), "ladder_step": int(current_ladder_step),
                                         "seconds_past_deadline": time.time() - float(deadline)})
    print(f"pace-worker: the fit's time budget ran out after {int(current_fit_iteration) + 1} optimizer steps; "
          "stopping here", flush=True)
    raise StopIteration("pace-worker: time budget of the fit reached")


def main() -> None:
    opts = json.loads(os.environ.get("PACE_WORKER_CHILD", "{}"))
    import tensorpotential  # noqa: F401, I001  (sets its TF globals first, as in plain pacemaker)
    import tensorflow as tf

    threads = opts.get("threads")
    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(int(threads))
        tf.config.threading.set_inter_op_parallelism_threads(min(2, int(threads)))
    gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
    report = {"requested": opts.get("device", "auto"), "gpus": gpus, "used": "gpu" if gpus else "cpu",
              "threads": threads}
    with open("device.json", "w") as f:
        json.dump(report, f)
    if not gpus and opts.get("device", "auto") == "auto":
        print(f"{DEVICE_LINE}no GPU visible to TensorFlow: the fit runs on the CPU", flush=True)
    elif gpus:
        print(f"{DEVICE_LINE}fitting on {', '.join(gpus)}", flush=True)
    if opts.get("device", "auto").startswith("gpu") and not gpus:
        print("pace-worker: a GPU was requested but TensorFlow sees none", file=sys.stderr)
        sys.exit(NO_GPU_EXIT)
    from pyace.cli.pacemaker import main as pacemaker_main

    # this file runs as __main__: pacemaker finds the step callback by its importable name
    importlib.import_module("pace_worker.ace.pacemaker_child")

    pacemaker_main(sys.argv[1:])


if __name__ == "__main__":
    main()
