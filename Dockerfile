# remora sidecar image.
#   docker build -t remora .
# Runs as uid 1337 (the uid `remora iptables` exempts from redirection) and
# reads its configuration from /etc/remora/remora.yaml (mount it there, or set
# REMORA_CONFIG). The same image serves as the init container that runs
# `remora iptables --apply` (as root, with NET_ADMIN), hence iptables.

FROM rust:1-bookworm AS build
# protoc: the etcd-client crate generates its gRPC code when it is built.
RUN apt-get update \
    && apt-get install -y --no-install-recommends protobuf-compiler \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin remora

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends iptables \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 1337 --user-group --no-create-home --shell /usr/sbin/nologin remora
COPY --from=build /src/target/release/remora /usr/local/bin/remora
ENV REMORA_CONFIG=/etc/remora/remora.yaml
# admin, transparent outbound, inbound
EXPOSE 15000 15001 15006
USER 1337
ENTRYPOINT ["/usr/local/bin/remora"]
CMD ["run"]
