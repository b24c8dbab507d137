# etcd for the compose lab's `ha` profile (docker-compose.yml): Debian's etcd-server, as the
# tests run it. This is the online recipe (`docker compose --profile ha up --build`: apt
# inside the build); scripts/build-images makes the same image offline from the host's own
# etcd binary (Debian's package, on the same Debian base).
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
RUN apt-get update && apt-get install -y --no-install-recommends etcd-server \
    && rm -rf /var/lib/apt/lists/*
CMD ["etcd", "--data-dir=/var/lib/etcd"]
