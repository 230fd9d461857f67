# syntax=docker/dockerfile:1
# Two images from one file, both installing the exact versions in constraints.txt (the same file
# scripts/setup.sh installs from), both running as a non-root user with `influence-trace` as entry point:
#   docker build --target operator -t influence-trace-operator:0.1.0 .   # slim: no torch
#   docker build --target worker   -t influence-trace-worker:0.1.0 .     # CUDA build of torch + transformers
# No container engine runs on the development machines: hack/images.sh builds both targets there with
# buildah (FROM a local Debian bookworm base given as PYTHON_IMAGE), and .github/workflows/images.yml
# builds and publishes them with Docker on a version tag.
# pip's cache and, where given, the builder's pip configuration (`--secret id=pip.conf` and its
# certificate `--secret id=pip-ca`, mounted at /etc/pip-ca.pem) are mounted for the install step only:
# neither ends up in an image. Without them pip uses its default index.

ARG PYTHON_IMAGE=python:3.11.7-slim-bookworm

# The dependencies of each target's extras, listed from pyproject.toml: copied into the targets by
# content, so an edit elsewhere in pyproject.toml keeps their installed layer cached.
FROM ${PYTHON_IMAGE} AS requirements
COPY pyproject.toml /
RUN python -c 'import tomllib; p = tomllib.load(open("/pyproject.toml", "rb"))["project"]; [open(f"/requirements-{e}.txt", "w").write("\n".join(p["dependencies"] + p["optional-dependencies"][e]) + "\n") for e in ("operator", "worker")]'

FROM ${PYTHON_IMAGE} AS base
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
RUN useradd --uid 65532 --no-create-home --shell /usr/sbin/nologin influence
WORKDIR /src
COPY constraints.txt ./

# Each target installs its dependencies first (their layer stays cached while only the code changes),
# then the project itself, and checks the result with `pip check`.
FROM base AS operator
COPY --from=requirements /requirements-operator.txt requirements.txt
RUN --mount=type=cache,target=/root/.cache/pip \
    --mount=type=secret,id=pip.conf,target=/etc/pip.conf \
    --mount=type=secret,id=pip-ca,target=/etc/pip-ca.pem \
    pip install -c constraints.txt -r requirements.txt
COPY pyproject.toml README.md ./
COPY worker/ worker/
COPY operator/ operator/
RUN --mount=type=cache,target=/root/.cache/pip \
    --mount=type=secret,id=pip.conf,target=/etc/pip.conf \
    --mount=type=secret,id=pip-ca,target=/etc/pip-ca.pem \
    pip install --no-deps -c constraints.txt ".[operator]" && pip check
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["influence-trace"]
CMD ["operator"]

FROM base AS worker
# torch from PyPI is the CUDA build; its nvidia-* runtime libraries are pinned in constraints.txt too.
COPY --from=requirements /requirements-worker.txt requirements.txt
RUN --mount=type=cache,target=/root/.cache/pip \
    --mount=type=secret,id=pip.conf,target=/etc/pip.conf \
    --mount=type=secret,id=pip-ca,target=/etc/pip-ca.pem \
    pip install -c constraints.txt -r requirements.txt
COPY pyproject.toml README.md ./
COPY worker/ worker/
COPY operator/ operator/
RUN --mount=type=cache,target=/root/.cache/pip \
    --mount=type=secret,id=pip.conf,target=/etc/pip.conf \
    --mount=type=secret,id=pip-ca,target=/etc/pip-ca.pem \
    pip install --no-deps -c constraints.txt ".[worker]" && pip check
ENV HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# Created before USER, so root's: uid 65532 writes only to the volumes its pod mounts (/tmp, /dev/shm
# and, with spec.storage.volumeClaim, /workspace).
WORKDIR /workspace
USER 65532:65532
ENTRYPOINT ["influence-trace"]
CMD ["--help"]
