# syntax=docker/dockerfile:1
# BUSGen CPU image: runs `make demo` (the whole pipeline on CPU) and `busgen ...` commands.
#
#   docker build -t busgen:cpu .
#   docker run --rm --shm-size=2g -v "$PWD/demo_out:/home/ray/busgen/demo_out" busgen:cpu   # make demo
#   docker run --rm busgen:cpu busgen --version
#
# Follows Ray's image conventions (rayproject/ray): a `ray` user (uid 1000, gid 100) with
# passwordless sudo, HOME and WORKDIR under /home/ray, UTF-8 locale. torch is the CPU build
# of 2.13.0 from the PyTorch CPU index, never a CUDA build; the rest installs with
# constraints-cpu.txt so nothing swaps torch. The GPU image is docker/Dockerfile.cuda.
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}

ARG RAY_UID=1000
ARG RAY_GID=100
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV LC_ALL=C.UTF-8 \
    LANG=C.UTF-8 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    RAY_USAGE_STATS_ENABLED=0

# make: the image's command is `make demo`; sudo: Ray's images give the ray user sudo.
RUN apt-get update \
    && apt-get install -y --no-install-recommends make sudo \
    && rm -rf /var/lib/apt/lists/* \
    && useradd -ms /bin/bash -d /home/ray ray --uid "${RAY_UID}" --gid "${RAY_GID}" \
    && usermod -aG sudo ray \
    && echo 'ray ALL=NOPASSWD: ALL' >> /etc/sudoers

USER ${RAY_UID}
ENV HOME=/home/ray
WORKDIR /home/ray/busgen

# The venv the Makefile uses (.venv), first on PATH so `busgen`, `ray` and `python` are its own.
ENV VIRTUAL_ENV=/home/ray/busgen/.venv \
    PATH=/home/ray/busgen/.venv/bin:${PATH}

# torch first, in its own layer (about 200 MB; rebuilt only when the pin changes).
COPY --chown=ray:users constraints-cpu.txt ./
RUN python -m venv .venv \
    && .venv/bin/pip install -q --index-url "${TORCH_INDEX_URL}" -c constraints-cpu.txt torch==2.13.0

# Then the package: `make install` keeps the torch above (its CPU-build check must pass) and
# installs `.[dev]` with constraints-cpu.txt, so `make demo` and `make test` run in the image.
COPY --chown=ray:users . .
RUN make install \
    && .venv/bin/python -c "import torch; assert not torch.version.cuda, torch.__version__" \
    && busgen --version

CMD ["make", "demo"]
