# Built from the context .dockerignore leaves: pyproject.toml, README.md, src/ and the probe.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
COPY deploy/docker/probe.py /usr/local/bin/webhook-router-probe
RUN pip install --no-cache-dir . \
    && chmod 0755 /usr/local/bin/webhook-router-probe \
    && useradd --system --uid 10001 router
USER router
ENV WEBHOOK_ROUTER_LOG_FORMAT=json
# Roles run with --health-port 8090 (compose and Kubernetes); other commands set their own
# check (compose) or disable it.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["webhook-router-probe", "http://127.0.0.1:8090/healthz"]
ENTRYPOINT ["webhook-router"]
CMD ["--help"]
