# syntax=docker/dockerfile:1
#
# The `parley` binary (crate `gateway`) in a small runtime image.
#
#   docker build -t parley .
#   docker run --rm -p 127.0.0.1:8080:8080 -v parley-data:/var/lib/parley parley
#
# The cluster stack in compose/ builds this image; see compose/README.md.
# gateway/tests/compose.rs keeps this file consistent with the workspace.

# ---------------------------------------------------------------------------
# Builder: the toolchain the project is built and tested with (the
# workspace's rust-version, 1.88, is only the floor), on Debian 12
# (bookworm), the same release as the runtime stage, so the binary needs no
# newer glibc than the runtime has.
FROM rust:1.95.0-slim-bookworm AS builder

# The slim image has gcc and libc6-dev (enough for rusqlite's bundled
# SQLite, built with the cc crate). What the C parts of the dependencies
# need on top:
# - g++, make: rdkafka builds its bundled librdkafka with `./configure &&
#   make`, and librdkafka's configure requires a C++ compiler;
# - zlib1g-dev, pkg-config: librdkafka's zlib support (rdkafka's default
#   `libz` feature), found through pkg-config. The runtime's zlib1g is part
#   of every Debian image.
# Not needed: cmake (only for rdkafka's `cmake-build` feature), python3
# (librdkafka's configure uses it only for a shared-library linker script),
# libssl-dev and libcurl-dev (rdkafka-sys configures librdkafka with
# --disable-ssl and --disable-curl unless its `ssl`/`curl` features are on;
# add libssl-dev here if TLS to Kafka is turned on that way).
RUN apt-get update \
    && apt-get install -y --no-install-recommends g++ make pkg-config zlib1g-dev \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /src
# The whole workspace (see .dockerignore): Cargo needs every member's
# manifest, and the web client (web/app) is embedded into the binary at
# build time.
COPY . .

# --locked: exactly the versions in Cargo.lock, or fail. The cache mounts keep
# the crate registry and target/ between builds (BuildKit); the binary is
# copied out because a cache mount is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p gateway --bin parley \
    && cp target/release/parley /usr/local/bin/parley

# ---------------------------------------------------------------------------
# Runtime: Debian 12 slim, for a shell and curl (the health check) and the
# same glibc as the builder.
FROM debian:12-slim

# ca-certificates: TLS to SMTP servers and webhooks; curl: HEALTHCHECK.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*

# A fixed, non-root UID/GID (10001), so volume ownership is predictable.
# /var/lib/parley and its keys/ directory exist in the image, owned by that
# user, so named volumes mounted there start out writable by it.
RUN groupadd --system --gid 10001 parley \
    && useradd --system --uid 10001 --gid parley --home-dir /var/lib/parley \
        --shell /usr/sbin/nologin parley \
    && mkdir -p /var/lib/parley/keys /etc/parley \
    && chown -R parley:parley /var/lib/parley \
    && chmod 0700 /var/lib/parley/keys

COPY --from=builder /usr/local/bin/parley /usr/local/bin/parley

USER 10001:10001
WORKDIR /var/lib/parley
# The database (embedded mode), media, the outbox and keys/ (the token
# signing key and, unless configured, the password pepper).
VOLUME ["/var/lib/parley"]

EXPOSE 8080
# Liveness only (/readyz also checks storage). Assumes the node listens on
# port 8080, as CMD below and compose/parley.toml configure it.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:8080/healthz"]

# parley is PID 1 and gets SIGTERM on `docker stop`: it closes clients with
# 1001 (going away), finishes in-flight requests and exits.
ENTRYPOINT ["parley", "serve"]
# Defaults for a lone node; `docker run … parley --config FILE` replaces
# them (compose/ does). PARLEY_* environment variables still apply.
CMD ["--listen", "0.0.0.0:8080", "--data-dir", "/var/lib/parley", "--log-format", "json"]
