# One image for every Clique component; entrypoint `clique` (e.g. `clique scheduler extender`, `clique agent`).
# Stage 1 builds wheels (compilers allowed); stage 2 installs them into a slim runtime with no compilers.
FROM python:3.11-slim AS build
WORKDIR /src
RUN apt-get update && apt-get install -y --no-install-recommends build-essential && rm -rf /var/lib/apt/lists/*
COPY pyproject.toml constraints.txt README.md ./
COPY clique ./clique
COPY topology ./topology
COPY scheduler ./scheduler
COPY autoscaler ./autoscaler
COPY simulations ./simulations
RUN pip wheel --no-cache-dir --wheel-dir /wheels -c constraints.txt .

FROM python:3.11-slim
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin clique
COPY --from=build /wheels /wheels
COPY constraints.txt /tmp/constraints.txt
RUN pip install --no-cache-dir --no-index --find-links /wheels -c /tmp/constraints.txt clique-scheduler \
    && rm -rf /wheels /tmp/constraints.txt
COPY manifests /opt/clique/manifests
USER 10001
ENTRYPOINT ["clique"]
CMD ["--help"]
