# Switchyard in a container: a release build in the Rust image, run from Debian slim as a non-root
# user (docs/operations.md, "Container image"). Not built by the test suite: its machines cannot
# pull base images (only crates.io, PyPI, Debian and npm are reachable).
#   docker build -t switchyard .          (or: podman build -t switchyard .)
#   docker run -p 8080:8080 -p 8443:8443 switchyard
#   docker run ... -v ./switchyard.toml:/etc/switchyard/switchyard.toml:ro switchyard
# The config in the image is packaging/installed-config.sh --container: listeners on 0.0.0.0:8080
# and :8443, the access log on stdout, the admin API on the container's loopback (127.0.0.1:9900).

FROM docker.io/library/rust:1-bookworm AS build
# cmake for pingora's zlib-ng build (make for jemalloc's is in the image).
RUN apt-get update \
    && apt-get install -y --no-install-recommends cmake protobuf-compiler \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin switchyard \
    && mkdir -p /out \
    && cp target/release/switchyard /out/ \
    && packaging/installed-config.sh --container >/out/switchyard.toml \
    && /out/switchyard check --config /out/switchyard.toml

FROM docker.io/library/debian:bookworm-slim
# CA roots for upstream TLS, ACME and `ctl --admin https://...`.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --user-group --home-dir /var/lib/switchyard --no-create-home \
        --shell /usr/sbin/nologin switchyard \
    && install -d -m 0700 -o switchyard -g switchyard /var/lib/switchyard \
    && install -d -m 0750 -o switchyard -g switchyard /run/switchyard
COPY --from=build /out/switchyard /usr/bin/switchyard
COPY --from=build /out/switchyard.toml /etc/switchyard/switchyard.toml
USER switchyard
WORKDIR /var/lib/switchyard
# Runtime state (weights set through the admin API, rollouts, ACME certificates).
VOLUME ["/var/lib/switchyard"]
EXPOSE 8080 8443
# SIGTERM drains (docker stop: give it more than [server] drain_timeout, `--time 15`).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/switchyard"]
CMD ["serve", "--config", "/etc/switchyard/switchyard.toml"]
