# pace-worker image: TensorFlow with its CUDA wheels (GPU when `docker run --gpus all` gives one,
# CPU otherwise), runnable as root or as any --user UID:GID (no passwd entry or home needed) and
# with --read-only --tmpfs /tmp: the worker writes only to /data (its outputs) and /tmp.
#
#   docker-compose build pace_worker
#   docker run --rm --gpus all -v $(pwd)/data:/data pace_worker:latest python /app/src/main.py train ...
#
# scripts/docker_check.sh builds it and runs the four commands end to end (CPU, no registry
# needed: it builds a Debian bookworm stand-in for python:3.11-slim and passes BASE_IMAGE).
ARG BASE_IMAGE=python:3.11-slim

# ---- builder: the virtual environment /opt/venv, made by the same scripts/install.sh as every install
FROM ${BASE_IMAGE} AS builder
# the label lets scripts/docker_check.sh keep this stage as build cache and prune older ones
LABEL pace_worker.image=builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /app
COPY pyproject.toml constraints.txt ./
COPY scripts/install.sh ./scripts/install.sh
# Only the three files above invalidate this (slow, multi-GB) layer: the package is installed
# editable from a placeholder src/ and README.md (the venv then points at /app/src), and the
# real ones are copied into the runtime stage, so a change in src/ rebuilds in seconds.
# Not needed to run, removed: tensorflow/include (C++ headers for building custom ops, 350 MB)
# and the test suites shipped inside these libraries (150 MB; no library code imports them).
RUN mkdir -p src/pace_worker \
 && echo '__version__ = "0.1.0"' > src/pace_worker/__init__.py \
 && echo '# pace-worker' > README.md \
 && PACE_WORKER_VENV=/opt/venv bash scripts/install.sh --gpu --no-test \
 && rm -rf src \
 && cd /opt/venv/lib/python3.11/site-packages \
 && rm -rf tensorflow/include \
 && for pkg in sympy scipy sklearn pandas numpy dask distributed matplotlib mpl_toolkits h5py mpmath toolz; do \
      find "$pkg" -depth -type d -name tests -exec rm -rf {} + ; \
    done \
 && python -c "import pyace, tensorpotential, ase, sympy, scipy.optimize, sklearn.cluster, pandas, dask.distributed, matplotlib.pyplot"

# ---- runtime: the base image + /opt/venv + /app (no compilers, no pip cache, no pytest, no git)
FROM ${BASE_IMAGE}
LABEL pace_worker.image=runtime
# Any user: HOME and the caches live in /tmp (world-writable; a tmpfs under --read-only), the
# user name comes from the environment, so nothing needs a passwd entry (getpass.getuser(),
# os.path.expanduser) and nothing is written outside /data and /tmp.
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    VIRTUAL_ENV=/opt/venv \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PACE_WORKER_NO_PROGRESS=1 \
    TF_CPP_MIN_LOG_LEVEL=2 \
    HOME=/tmp \
    USER=pace-worker \
    LOGNAME=pace-worker \
    XDG_CACHE_HOME=/tmp/.cache \
    XDG_CONFIG_HOME=/tmp/.config \
    MPLCONFIGDIR=/tmp/.config/matplotlib \
    KERAS_HOME=/tmp/.keras \
    DASK_CONFIG=/tmp/.config/dask \
    DASK_TEMPORARY_DIRECTORY=/tmp
COPY --from=builder /opt/venv /opt/venv
WORKDIR /app
COPY --from=builder /app ./
COPY README.md ./
COPY src ./src
COPY examples ./examples
RUN python -m compileall -q /app/src
VOLUME ["/data"]
CMD ["python", "/app/src/main.py", "--help"]
