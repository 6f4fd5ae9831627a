# syntax=docker/dockerfile:1
# One image for the API and the workers (CPU and GPU): `python -m service.main` or `celery -A worker.main worker`.
# For CUDA workers build with an extra index that serves CUDA builds of the pinned torch:
#   docker build --build-arg PIP_EXTRA_INDEX_URL=<index with CUDA wheels> -t prunekit .
ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim AS build
ARG PIP_EXTRA_INDEX_URL=""
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_EXTRA_INDEX_URL=${PIP_EXTRA_INDEX_URL}
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Dependencies first, so code changes do not reinstall torch.
# The constraints are the versions the test suite last passed with (scripts/setup.sh uses them too).
COPY pyproject.toml README.md ./
COPY requirements/constraints.txt ./requirements/
RUN mkdir -p prunekit jobstore service worker \
    && touch prunekit/__init__.py jobstore/__init__.py service/__init__.py worker/__init__.py \
    && pip install -c requirements/constraints.txt ".[worker]" && pip uninstall -y prunekit
COPY prunekit ./prunekit
COPY jobstore ./jobstore
COPY service ./service
COPY worker ./worker
RUN pip install --no-deps . && python -c "import service.app, jobstore.queue"

FROM python:${PYTHON_VERSION}-slim AS runtime
RUN useradd --create-home --uid 10001 prunekit && mkdir -p /data && chown prunekit /data
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PRUNEKIT_HOST=0.0.0.0 \
    PRUNEKIT_PORT=8000 \
    PRUNEKIT_DATABASE_URL=sqlite:////data/prunekit.db \
    PRUNEKIT_BROKER_DIR=/data/broker \
    PRUNEKIT_STORAGE_DIR=/data/storage \
    PRUNEKIT_WORK_DIR=/data/work
WORKDIR /data
USER prunekit
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/livez', timeout=4)"
CMD ["python", "-m", "service.main"]
