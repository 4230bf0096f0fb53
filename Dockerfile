# tenant-reconcile image: `docker build -t REGISTRY/tenant-reconcile:VERSION-GITSHA .` (k8s/README.md, step 0)
# Runs as UID 10001 with no shell needs and no writes outside $TMPDIR, so the Kubernetes manifests
# (k8s/) can use runAsNonRoot and a read-only root filesystem. No secrets: the DB URLs arrive at run
# time through PRODUCT_DATABASE_URL(_FILE) and MARKETPLACE_DATABASE_URL(_FILE) or DATABASE_URL.

# --- build: the locked dependencies, then the project's wheel, into a venv -------------------------
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Exactly the versions of the lock file, each file checked against its recorded sha256 (made by
# pip-compile --generate-hashes from pyproject.toml; README "The Docker image and its lock file").
# A layer of its own: it is rebuilt only when the lock changes.
COPY requirements.lock ./
RUN python -m venv /opt/venv \
    && /opt/venv/bin/pip install --require-hashes --no-deps -r requirements.lock
COPY pyproject.toml README.md ./
COPY reconcile ./reconcile
COPY jobs ./jobs
# The project itself without resolving anything again; pip check fails the build if the lock
# misses a dependency.
RUN /opt/venv/bin/pip wheel --no-deps --wheel-dir /tmp/wheels . \
    && /opt/venv/bin/pip install --no-deps /tmp/wheels/*.whl \
    && /opt/venv/bin/pip check

# --- runtime: the same base, the venv, an unprivileged user ---------------------------------------
FROM python:3.11-slim
# Same base image as the build stage, so the venv's interpreter symlinks stay valid.
COPY --from=build /opt/venv /opt/venv
# Bytecode was compiled at install time; the root filesystem is read-only at run time.
# Unbuffered: the JSON log lines of the long-running `schedule` mode reach the log collector at once.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TMPDIR=/tmp
RUN groupadd --system --gid 10001 reconcile \
    && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin reconcile
# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
ENTRYPOINT ["tenant-reconcile"]
CMD ["run"]
