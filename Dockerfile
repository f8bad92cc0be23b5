# One image for every component: `mpaas <component>` picks what runs.
# The build stage has a C compiler: the hot-path modules ship compiled (components/mpaas/compiled.py).
FROM python:3.11 AS build
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY components ./components
COPY operator ./operator
RUN MPAAS_COMPILE=1 pip install --no-cache-dir --prefix=/install . \
 && python -c "import sys; sys.path[:0] = ['/install/lib/python3.11/site-packages']; \
import mpaas.compiled as c; loaded = c.loaded_compiled(); assert all(loaded.values()), loaded"

FROM python:3.11-slim
LABEL org.opencontainers.image.title="mpaas" \
      org.opencontainers.image.description="Kubernetes-native mobile backend platform" \
      org.opencontainers.image.source="https://github.com/mpaas-io/mpaas" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /install /usr/local
RUN groupadd --system --gid 10001 mpaas && useradd --system --uid 10001 --gid mpaas --no-create-home mpaas
USER 10001:10001
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
EXPOSE 8080
ENTRYPOINT ["mpaas"]
CMD ["--help"]
