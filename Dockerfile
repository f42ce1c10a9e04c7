# syntax=docker/dockerfile:1
# Palisade agent image: `make image` (docker build -t palisade:dev .).
#
# Build stage: the whole workspace is copied (Cargo.toml declares targets
# under integration/ and benches/, and cargo checks that they exist even when
# building only --bin palisade). Cache mounts keep the registry and target
# dir between builds; the binary is copied out of the cached target dir.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin palisade \
    && install -D -m 0755 target/release/palisade /out/palisade

# Runtime: the agent shells out to iptables-restore / ip6tables-restore and
# ipset. Debian's iptables package ships both backends (iptables-legacy* and
# iptables-nft*, via xtables-legacy-multi / xtables-nft-multi); the agent's
# --backend=auto picks the one the node already uses.
FROM debian:bookworm-slim
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        ca-certificates \
        iptables \
        ipset \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/palisade /usr/local/bin/palisade
LABEL org.opencontainers.image.title="palisade" \
      org.opencontainers.image.description="Kubernetes NetworkPolicy agent (ipset + iptables)" \
      org.opencontainers.image.licenses="Apache-2.0"
# Runs as root with only CAP_NET_ADMIN + CAP_NET_RAW (see charts/palisade).
ENTRYPOINT ["/usr/local/bin/palisade"]
CMD ["agent"]
