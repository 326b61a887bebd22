"""Child process of a fit: set device and threads before TensorFlow starts, then run pacemaker.

Started by :mod:`pace_worker.fit` as ``python -m pace_worker._pacemaker_child <pacemaker args>``
with the settings in the environment variable ``PACE_WORKER_CHILD`` (JSON). Writes the
devices TensorFlow saw to ``device.json`` in the working folder; exits with status 3 when a
GPU was required (``device: gpu``) and TensorFlow sees none.
"""
import json
import os
import sys

NO_GPU_EXIT = 3


def main() -> None:
    opts = json.loads(os.environ.get("PACE_WORKER_CHILD", "{}"))
    import tensorpotential  # noqa: F401  (sets its TF globals first, as in plain pacemaker)
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
    if opts.get("device", "auto").startswith("gpu") and not gpus:
        print("pace-worker: a GPU was requested but TensorFlow sees none", file=sys.stderr)
        sys.exit(NO_GPU_EXIT)
    from pyace.cli.pacemaker import main as pacemaker_main

    pacemaker_main(sys.argv[1:])


if __name__ == "__main__":
    main()
