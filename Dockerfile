# curate as a batch-job image. The install steps are scripts/install.sh, the same script CI runs.
#   docker build -t curate .
#   docker run --rm -v $PWD/data:/data -v $PWD/runs:/runs curate run /opt/curate/src/configs/default.yaml
# For a CUDA base: --build-arg BASE=nvidia/cuda:12.8.0-runtime-ubuntu24.04 (python3.11 + venv required)
ARG BASE=python:3.11-slim
FROM ${BASE}
ARG TORCH_VERSION=2.13.0
ENV VENV=/opt/curate/venv \
    PATH=/opt/curate/venv/bin:$PATH \
    TORCH_VERSION=${TORCH_VERSION} \
    HF_HUB_OFFLINE=1 \
    PYTHONUNBUFFERED=1
RUN useradd --create-home --uid 1000 curate
WORKDIR /opt/curate/src
COPY . .
RUN bash scripts/install.sh && rm -rf /root/.cache/pip && chown -R curate /opt/curate
USER curate
ENTRYPOINT ["curate"]
CMD ["--help"]
