# syntax=docker/dockerfile:1.7
# rsd images, two targets (docs/deployment.md); cpu is the last stage, so the default one:
#   cpu  the embedded default model on ONNX Runtime, CPython 3.11 slim, no torch
#   gpu  CUDA 13 + cuDNN runtime, ONNX Runtime GPU and TensorRT; the TensorRT engine is built for the GPU at
#        the first start and cached on the /var/cache/rsd volume
#
#   docker build --target cpu -t rsd:0.1.0-cpu .
#   docker build --target gpu -t rsd:0.1.0-gpu .
#
# Both install the Python side with docker/install.sh (pinned by docker/constraints.txt), the script the
# tests run into a fresh environment. Both run as uid 10001 and work with a read-only root filesystem
# (writable: /tmp, and /var/cache/rsd on gpu).

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:65a93d69fa75478d554f4ad27c85c1e69fa184956261b4301ebaf6dbb0a3543d
ARG CUDA_IMAGE=nvidia/cuda:13.0.2-cudnn-runtime-ubuntu24.04

# ---- gpu ---------------------------------------------------------------------------------------------

FROM ${CUDA_IMAGE} AS gpu-base
# Ubuntu's python3.12 follows the archive's security updates; pinning its exact build would break the build
# whenever Ubuntu publishes a fix, so the Python packages are pinned instead (docker/constraints.txt).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.12 \
    && rm -rf /var/lib/apt/lists/*

FROM gpu-base AS gpu-build
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.12-venv \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY docker/install.sh docker/constraints.txt docker/
COPY pyproject.toml README.md ./
COPY rsd rsd/
COPY service service/
COPY model_export model_export/
RUN --mount=type=cache,target=/root/.cache/pip PYTHON=python3.12 docker/install.sh /opt/rsd/venv gpu

FROM gpu-base AS gpu
LABEL org.opencontainers.image.title="rsd" \
      org.opencontainers.image.description="x4 super-resolution service (gpu)" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 rsd \
    && useradd --system --uid 10001 --gid rsd --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin rsd \
    && mkdir -p /var/cache/rsd \
    && chown 10001:10001 /var/cache/rsd
COPY models/default /opt/rsd/models/default
COPY docker/healthcheck.py docker/gpu_entrypoint.py /opt/rsd/docker/
COPY --from=gpu-build /opt/rsd/venv /opt/rsd/venv
ENV PATH=/opt/rsd/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    RSD_MODEL_PATH=/opt/rsd/models/default/rsd-tiny-x4-fp32-t128.onnx \
    RSD_BACKEND=tensorrt \
    RSD_ENGINE_CACHE=/var/cache/rsd/engines \
    CUDA_CACHE_PATH=/var/cache/rsd/cuda \
    RSD_HOST=0.0.0.0 \
    RSD_PORT=8000
VOLUME ["/var/cache/rsd"]
WORKDIR /opt/rsd
USER 10001:10001
EXPOSE 8000
# The first start on a new GPU builds the engine (minutes for a full-size model): a long start period.
HEALTHCHECK --interval=10s --timeout=5s --start-period=900s --retries=3 \
    CMD ["python", "/opt/rsd/docker/healthcheck.py"]
ENTRYPOINT ["python", "/opt/rsd/docker/gpu_entrypoint.py"]
CMD ["rsd", "serve"]

# ---- cpu ---------------------------------------------------------------------------------------------

FROM ${PYTHON_IMAGE} AS cpu-build
WORKDIR /src
COPY docker/install.sh docker/constraints.txt docker/
COPY pyproject.toml README.md ./
COPY rsd rsd/
COPY service service/
RUN --mount=type=cache,target=/root/.cache/pip docker/install.sh /opt/rsd/venv cpu

FROM ${PYTHON_IMAGE} AS cpu
LABEL org.opencontainers.image.title="rsd" \
      org.opencontainers.image.description="x4 super-resolution service (cpu)" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 rsd \
    && useradd --system --uid 10001 --gid rsd --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin rsd
COPY models/default /opt/rsd/models/default
COPY docker/healthcheck.py /opt/rsd/docker/
COPY --from=cpu-build /opt/rsd/venv /opt/rsd/venv
ENV PATH=/opt/rsd/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    RSD_MODEL_PATH=/opt/rsd/models/default/rsd-tiny-x4.json \
    RSD_CACHE_DIR=/tmp/rsd \
    RSD_HOST=0.0.0.0 \
    RSD_PORT=8000
WORKDIR /opt/rsd
USER 10001:10001
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "/opt/rsd/docker/healthcheck.py"]
CMD ["rsd", "serve"]
