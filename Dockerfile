# The project image: one image for the gRPC code server, the run tasks (ECS) / run pods (Kubernetes), and, if you
# like, the webserver and the daemon. No secret is baked in: credentials come from the task/pod role and the
# database password from the environment at run time (see deploy/README.md).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DAGSTER_HOME=/opt/dagster/home \
    RETAIL_DAGSTER_MODEL_CACHE=/tmp/retail-dagster-models

# libgomp1: OpenMP runtime for LightGBM
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/dagster/app
# dependencies first (cached layer), then the code
COPY pyproject.toml README.md ./
COPY retail_dagster ./retail_dagster
# dagster-postgres: the instance storage; dagster-k8s: run pods load the instance, whose run launcher is the
# K8sRunLauncher on Kubernetes (dagster-aws, for the EcsRunLauncher, comes with the project)
RUN pip install . "dagster-postgres==0.29.27" "dagster-k8s==0.29.27" \
    && useradd --create-home --uid 10001 --shell /usr/sbin/nologin dagster \
    && mkdir -p "$DAGSTER_HOME" \
    && touch "$DAGSTER_HOME/dagster.yaml" \
    && chown -R dagster:dagster "$DAGSTER_HOME"

# mount deploy/dagster.yaml over $DAGSTER_HOME/dagster.yaml (ECS: a bind mount or an init step; K8s: the
# instance ConfigMap that the Helm chart creates)
USER 10001
EXPOSE 4000

# The code location as a gRPC server; the webserver and the daemon reach it through deploy/workspace.grpc.yaml.
# Run tasks use the same image with the command the run launcher gives them (`dagster api execute_run ...`).
CMD ["dagster", "api", "grpc", "-h", "0.0.0.0", "-p", "4000", \
     "-m", "retail_dagster.definitions", "--location-name", "retail_dagster"]
