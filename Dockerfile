# remora sidecar image.
#   docker build -t remora .
# Runs as uid 1337 (the uid `remora iptables` exempts from redirection) and
# reads its configuration from /etc/remora/remora.yaml (mount it there, or set
# REMORA_CONFIG). The same image serves as the init container that runs
# `remora iptables --apply` (as root, with NET_ADMIN), hence iptables.

# The Rust the project is tested with: the profile-guided build needs the
# llvm-profdata of that rustc's LLVM (a Debian package, llvm-22 for 1.95).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# The release as it ships: profile-guided (scripts/release.sh installs what
# it needs, protoc for the build and the training workload's servers, and
# builds twice).
RUN scripts/release.sh && rm -rf /var/lib/apt/lists/*

FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends iptables \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 1337 --user-group --no-create-home --shell /usr/sbin/nologin remora
COPY --from=build /src/target/release-pgo/remora /usr/local/bin/remora
ENV REMORA_CONFIG=/etc/remora/remora.yaml
# admin, transparent outbound, inbound
EXPOSE 15000 15001 15006
USER 1337
ENTRYPOINT ["/usr/local/bin/remora"]
CMD ["run"]
