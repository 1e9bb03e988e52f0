FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir . && useradd --system --uid 10001 router
USER router
ENV WEBHOOK_ROUTER_LOG_FORMAT=json
ENTRYPOINT ["webhook-router"]
CMD ["--help"]
