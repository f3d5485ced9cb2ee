# identity-engine's container image (docs/deploy.md).
#
#   docker build -t identity-engine .                      the default target: built from source
#   cargo build --release && \
#     docker build --target prebuilt -t identity-engine .  the binary of target/release instead
#
# (podman: `podman build --format docker ...`, since an OCI image has no HEALTHCHECK.)
#
# The runtime is Debian bookworm's slim image with only the binary (and the healthcheck script)
# added: the server runs as an unprivileged user, keeps its data in the /data volume, listens on
# 0.0.0.0:$PORT (3000 unless PORT is set), and, as PID 1, handles SIGTERM itself: it drains the
# requests in flight, syncs the log, writes a snapshot and exits 0.

ARG RUST_VERSION=1.89

# The build: the official Rust image is Debian bookworm too, so the binary links the glibc the
# runtime has. The caches keep crates and compiled dependencies between builds (BuildKit, podman).
FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin identity-engine \
 && install -D target/release/identity-engine /out/identity-engine

# What both runtime stages share: everything but the binary.
FROM debian:bookworm-slim AS base
# A fixed uid and gid, so that a volume's owner is the same on every host and in every image.
RUN groupadd --gid 10001 identity \
 && useradd --uid 10001 --gid identity --home-dir /data --no-create-home --no-log-init \
      --shell /usr/sbin/nologin identity \
 && install -d -o identity -g identity -m 0700 /data
COPY packaging/container-healthcheck /usr/local/bin/identity-engine-healthcheck
ENV PORT=3000 \
    IDENTITY_ENGINE_DATA_DIR=/data
VOLUME /data
WORKDIR /data
EXPOSE 3000
USER 10001:10001
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["/usr/local/bin/identity-engine-healthcheck"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/identity-engine"]

# The runtime with a binary built outside (`cargo build --release` on a bookworm-compatible glibc).
FROM base AS prebuilt
COPY target/release/identity-engine /usr/local/bin/identity-engine

# The default target: the runtime with the binary of the build stage.
FROM base AS runtime
COPY --from=build /out/identity-engine /usr/local/bin/identity-engine
