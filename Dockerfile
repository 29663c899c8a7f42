# The ML Job Portal as one container: UI, REST API and /healthz in one process.
#   docker build -t ml-portal:0.1.0 .       (docs/admin.md: deploying it with manifests/)
# Build tools stay in the first stage; the final image holds the virtual environment and the app only.
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
COPY requirements.txt /tmp/requirements.txt
RUN python -m venv /opt/venv
# requirements.txt pins every package; the pip cache is a build mount, so it never lands in a layer.
RUN --mount=type=cache,target=/root/.cache/pip /opt/venv/bin/pip install --no-compile -r /tmp/requirements.txt

FROM ${PYTHON_IMAGE}
ENV PATH=/opt/venv/bin:/usr/local/bin:/usr/bin:/bin \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    PORTAL_DATA_DIR=/data \
    STREAMLIT_SERVER_ADDRESS=0.0.0.0 \
    STREAMLIT_SERVER_PORT=8501 \
    STREAMLIT_SERVER_HEADLESS=true \
    STREAMLIT_SERVER_FILE_WATCHER_TYPE=none \
    STREAMLIT_BROWSER_GATHER_USAGE_STATS=false \
    STREAMLIT_CLIENT_TOOLBAR_MODE=viewer
# OpenShift runs the container under an arbitrary UID in group 0, so the data directory belongs to
# group 0 and is group-writable; elsewhere the image runs as the unprivileged user 1001.
RUN useradd --uid 1001 --gid 0 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin portal \
    && mkdir -p /data && chown 1001:0 /data && chmod 2775 /data
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
COPY portal_app.py ./
COPY .streamlit ./.streamlit
COPY api ./api
COPY pages ./pages
COPY services ./services
COPY examples ./examples
USER 1001
VOLUME ["/data"]
EXPOSE 8501
HEALTHCHECK --interval=30s --timeout=5s --start-period=40s --retries=3 CMD ["python", "-m", "services.healthcheck"]
CMD ["streamlit", "run", "portal_app.py"]
