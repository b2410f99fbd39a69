# syntax=docker/dockerfile:1
#
# webhook-exporter container image.
#
#   docker build -t webhook-exporter .
#   docker run -p 8916:8916 -v "$PWD/my-config.yaml:/etc/webhook-exporter/webhook-exporter.yaml:ro" webhook-exporter
#   docker run -p 8916:8916 webhook-exporter demo --web.listen-address=0.0.0.0:8916
#
# Same build as the README: `cargo build --release --locked` (Cargo.lock is authoritative).

# ---------------------------------------------------------------------------- build
FROM rust:1-bookworm AS builder
# .git is not in the build context, so build.rs cannot ask git for the revision shown in
# webhook_exporter_build_info: pass it in, e.g.
#   docker build --build-arg WEBHOOK_EXPORTER_REVISION="$(git rev-parse --short=12 HEAD)" .
ARG WEBHOOK_EXPORTER_REVISION=unknown
WORKDIR /src
# The whole context (see .dockerignore), so a build.rs or an embedded asset added later
# is part of the build without touching this file.
COPY . .
# BuildKit caches keep the crates.io index, downloaded crates and compiled dependencies
# between builds; the binary is copied out because the target cache is not part of the image.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
    && cp target/release/webhook-exporter /usr/local/bin/webhook-exporter

# ---------------------------------------------------------------------------- runtime
# debian:bookworm-slim rather than distroless: the same glibc as the builder, CA certificates
# for HTTPS probes (rustls-native-certs reads the system store), and curl for HEALTHCHECK
# (the exporter has no health-check subcommand, and distroless has no shell or HTTP client).
FROM debian:bookworm-slim

# Versions are not pinned on purpose: Debian stable only ships security fixes, and the
# archive drops superseded versions, so a pin would break the build at the next update.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 webhook-exporter \
    && useradd --system --uid 10001 --gid webhook-exporter --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin webhook-exporter

COPY --from=builder /usr/local/bin/webhook-exporter /usr/local/bin/webhook-exporter
COPY config/webhook-exporter.yaml /etc/webhook-exporter/webhook-exporter.yaml

USER 10001:10001
EXPOSE 8916

# Checks liveness only (/-/healthy). If --web.config.file enables basic auth or TLS, or the
# listen port changes, override this in `docker run --health-cmd` or in compose.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:8916/-/healthy"]

ENTRYPOINT ["/usr/local/bin/webhook-exporter"]
# Listen on every interface (a container is reached from outside its own loopback).
CMD ["--config.file=/etc/webhook-exporter/webhook-exporter.yaml", "--web.listen-address=0.0.0.0:8916"]
