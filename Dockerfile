# GPU image of pace-worker. UNTESTED on the development machines (no Docker engine there);
# it runs the same scripts/install.sh as the tested CPU install, plus the CUDA extra (--gpu).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PACE_WORKER_NO_PROGRESS=1 \
    TF_CPP_MIN_LOG_LEVEL=2

RUN apt-get update && apt-get install -y --no-install-recommends git && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml constraints.txt README.md ./
COPY scripts ./scripts
COPY src ./src
RUN bash scripts/install.sh --gpu --system

COPY examples ./examples
VOLUME ["/data"]
CMD ["python", "/app/src/main.py", "--help"]
