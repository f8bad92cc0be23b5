# One image for every component: `mpaas <component>` picks what runs.
# The build stage has a C compiler: the hot-path modules ship compiled (components/mpaas/compiled.py).
# BUILD_BASE and BASE are the official Python images by default; any pair with the same Python at the
# same path works (hack/build-image builds from a Debian root filesystem made without a registry).
ARG BUILD_BASE=python:3.11
ARG BASE=python:3.11-slim

FROM ${BUILD_BASE} AS build
# Set only where HTTPS goes through a proxy with its own CA (a bundle mounted into the build).
ARG PIP_CERT
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY components ./components
COPY operator ./operator
# A virtual environment at a fixed path: the runtime stage copies it whole, whichever Python lays out
# its own site-packages.
RUN python3 -m venv /opt/mpaas \
 && MPAAS_COMPILE=1 /opt/mpaas/bin/pip install --no-cache-dir --disable-pip-version-check . \
 && /opt/mpaas/bin/python -c "import mpaas.compiled as c; loaded = c.loaded_compiled(); \
assert all(loaded.values()), loaded"

FROM ${BASE}
LABEL org.opencontainers.image.title="mpaas" \
      org.opencontainers.image.description="Kubernetes-native mobile backend platform" \
      org.opencontainers.image.source="https://github.com/mpaas-io/mpaas" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /opt/mpaas /opt/mpaas
RUN groupadd --system --gid 10001 mpaas && useradd --system --uid 10001 --gid mpaas --no-create-home mpaas
USER 10001:10001
ENV PATH=/opt/mpaas/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
EXPOSE 8080
ENTRYPOINT ["mpaas"]
CMD ["--help"]
