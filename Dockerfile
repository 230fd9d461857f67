# syntax=docker/dockerfile:1
# Two images from one file, both installing the exact versions in constraints.txt (the same file
# scripts/setup.sh installs from), both running as a non-root user with `influence-trace` as entry point:
#   docker build --target operator -t influence-trace-operator:0.1.0 .   # slim: no torch
#   docker build --target worker   -t influence-trace-worker:0.1.0 .     # CUDA build of torch + transformers
# No container engine runs on the development machines; the images are built by CI elsewhere.

ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm

FROM ${PYTHON_IMAGE} AS base
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
WORKDIR /src
COPY constraints.txt pyproject.toml README.md ./
COPY worker/ worker/
COPY operator/ operator/
RUN useradd --uid 65532 --no-create-home --shell /usr/sbin/nologin influence

FROM base AS operator
RUN pip install -c constraints.txt ".[operator]"
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["influence-trace"]
CMD ["operator"]

FROM base AS worker
# torch from PyPI is the CUDA build; its nvidia-* runtime libraries are pinned in constraints.txt too.
RUN pip install -c constraints.txt ".[worker]"
ENV HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
USER 65532:65532
WORKDIR /workspace
ENTRYPOINT ["influence-trace"]
CMD ["--help"]
