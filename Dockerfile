# codedfarm image: one image for the collector and the workers (see compose.yaml).
# torch/torchvision are the registry's CUDA builds; they also run on CPU-only hosts.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    CODEDFARM_CACHE_DIR=/cache

# tini is PID 1 (the ENTRYPOINT below): it forwards signals to the codedfarm process and
# reaps orphans (a worker engine killed by its supervisor can leave pool processes behind).
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/*

# Unprivileged user that runs every codedfarm process, and the model weight cache it owns
# (a named volume mounted on /cache inherits this ownership when it is first created).
RUN groupadd --system --gid 10001 codedfarm \
    && useradd --system --uid 10001 --gid codedfarm --create-home --home-dir /home/codedfarm \
        --shell /usr/sbin/nologin codedfarm \
    && mkdir -p /cache \
    && chown codedfarm:codedfarm /cache

WORKDIR /opt/codedfarm
# README.md is part of the package metadata (pyproject's readme), so it is copied too.
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install . \
    && rm -rf /opt/codedfarm/src /root/.cache

USER 10001:10001
WORKDIR /home/codedfarm
VOLUME ["/cache"]
# collector and worker /metrics ports (with /livez and /readyz), the HTTP server's port
EXPOSE 9808 9809 8000

# Ready when the process's /readyz answers 200: a worker's by default (its metrics port,
# 9809); set CODEDFARM_PROBE_URL for a collector (9808) or the server (8000). compose.yaml
# and the Kubernetes manifests set their own probes.
ENV CODEDFARM_PROBE_URL=http://127.0.0.1:9809/readyz
HEALTHCHECK --interval=15s --timeout=5s --start-period=600s --retries=3 \
    CMD ["codedfarm", "probe"]

# Every command runs under tini: compose's `command:` and Kubernetes' `args:` replace only
# the CMD (a Kubernetes `command:` would replace tini too: use `args:`).
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["codedfarm", "--help"]

