# rmserve server image: `rmserve serve` on 0.0.0.0:8000 (REST) and :50051 (gRPC), as a non-root user.
#
#   docker build -t rmserve:0.1.0 .                                   # CPU torch (the default)
#   docker build -t rmserve:0.1.0-cuda \
#     --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 .   # CUDA torch (bundles its CUDA
#                                                                    # libraries; pick a CUDA your driver runs)
#   docker build --build-arg BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 ...  # a CUDA base instead
#                                                                      # (it must provide python3.11 + pip)
#   docker run --rm -p 8000:8000 -p 50051:50051 rmserve:0.1.0          # the bundled demo model
#   docker run --rm --gpus all -v /ckpt:/models:ro -p 8000:8000 rmserve:0.1.0-cuda \
#     --model /models --device cuda --dtype bfloat16
#
# torch is pinned by requirements/constraints.txt (the same version CI tests); every other
# dependency is constrained by the same file. k8s/ runs this image with a read-only root
# filesystem: everything written at run time goes to RMSERVE_CACHE and /tmp (emptyDirs there).
ARG BASE_IMAGE=python:3.11-slim
FROM ${BASE_IMAGE}

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG UID=10001

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false \
    RMSERVE_CACHE=/var/cache/rmserve \
    RMSERVE_HOST=0.0.0.0 \
    RMSERVE_PORT=8000 \
    RMSERVE_GRPC_PORT=50051

RUN groupadd --system --gid ${UID} rmserve \
 && useradd --system --uid ${UID} --gid ${UID} --home-dir /home/rmserve --create-home --shell /usr/sbin/nologin rmserve \
 && mkdir -p /var/cache/rmserve && chown ${UID}:${UID} /var/cache/rmserve

WORKDIR /opt/rmserve

# torch first, in its own layer: the largest download, and it changes least often.
COPY requirements/constraints.txt requirements/constraints.txt
RUN pip install -c requirements/constraints.txt --index-url "${TORCH_INDEX_URL}" torch

# The server and the client (the client package holds the gRPC stubs). rmserve is installed in
# editable mode so that the demo checkpoint at /opt/rmserve/models/demo (found relative to the
# source tree, rmserve/models/__init__.py) is the default model; .dockerignore lists what is copied.
COPY . .
RUN pip install -c requirements/constraints.txt "./clients/python[grpc]" -e . \
 && python -m compileall -q rmserve clients/python \
 && rmserve --version

USER ${UID}:${UID}
EXPOSE 8000 50051
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/healthz', timeout=4)"]
# Flags (or RMSERVE_* env vars, or --config FILE) configure it: docker run IMAGE --model /models ...
ENTRYPOINT ["rmserve", "serve"]
CMD ["--host", "0.0.0.0"]
