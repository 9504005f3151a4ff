# engram-voice service image.
#   docker build -t engram-voice:0.1.0 .
#   docker run --rm -p 8000:8000 --env-file prod.env engram-voice:0.1.0
# Configuration is environment only (docs/configuration.md). The web client is not baked in:
# production serves it from Azure Static Web Apps (infra/README.md).

ARG PYTHON_VERSION=3.11
ARG NODE_VERSION=22

# The /schema page's viewer: Scalar's standalone bundle at the version pinned by
# web/package-lock.json, copied into the package so the image serves it itself (no CDN).
FROM node:${NODE_VERSION}-bookworm-slim AS apidocs
WORKDIR /build/web
COPY web/package.json web/package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error
COPY web/scripts ./scripts
RUN node scripts/copy-apidocs.mjs

FROM python:${PYTHON_VERSION}-slim-bookworm AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /build
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
# The package and its runtime dependencies, pinned by constraints.txt, into /opt/venv;
# without the optional `emulator` extra (aiortc's WebRTC media stack, ~110 MB), which only
# the local Azure emulator uses. --compile writes the bytecode now (PYTHONDONTWRITEBYTECODE
# is set), so no start of the service recompiles ~500 modules.
COPY constraints.txt pyproject.toml README.md ./
COPY src ./src
COPY --from=apidocs /build/src/engram_voice/static/apidocs/ ./src/engram_voice/static/apidocs/
RUN pip install --upgrade pip \
    && pip install --compile -c constraints.txt .

FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    APP_ENV=production \
    HOST=0.0.0.0 \
    PORT=8000 \
    MEMORY_SQLITE_PATH=/data/memory/memory-queue.sqlite3
RUN groupadd --system --gid 10001 engram \
    && useradd --system --uid 10001 --gid engram --home-dir /home/engram --create-home engram \
    && mkdir -p /data/memory \
    && chown -R engram:engram /data
COPY --from=builder /opt/venv /opt/venv
USER engram:engram
WORKDIR /home/engram
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=4s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('PORT', '8000') + '/healthz', timeout=3).close()"]
CMD ["engram-voice", "serve"]
