# syntax=docker/dockerfile:1
# audit-stream image: `docker build -t audit-stream .`
#
# Runs as uid 10001 with a read-only root filesystem: the only writable paths are
# /var/lib/audit-stream (the embedded store; mount a volume there) and /tmp.

FROM rust:1-bookworm AS builder
# librdkafka is built from source by rdkafka-sys: its TLS support links OpenSSL.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libssl-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# rust-toolchain.toml pins the compiler; rustup installs it on first use. The cache
# mounts keep the registry and the build directory between builds.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin audit-stream \
    && install -m 0755 target/release/audit-stream /usr/local/bin/audit-stream

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libssl3 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 audit-stream \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/audit-stream \
       --no-create-home --shell /usr/sbin/nologin audit-stream \
    && install -d -o 10001 -g 10001 -m 0750 /var/lib/audit-stream \
    && install -d -m 0755 /etc/audit-stream
COPY --from=builder /usr/local/bin/audit-stream /usr/local/bin/audit-stream
# The defaults: every key documented, recipes file beside it. Override single keys with
# AUDIT_STREAM__<SECTION>__<KEY>, or mount another file and point AUDIT_STREAM_CONFIG at it.
COPY config/audit-stream.toml config/recipes.yaml /etc/audit-stream/

# The embedded store's default path ("audit-stream.db") is relative: it lands in the
# writable working directory.
WORKDIR /var/lib/audit-stream
ENV AUDIT_STREAM_CONFIG=/etc/audit-stream/audit-stream.toml \
    AUDIT_STREAM_LOG_FORMAT=json \
    RUST_LOG=info
USER 10001:10001
VOLUME ["/var/lib/audit-stream"]
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/audit-stream"]
CMD ["run"]
