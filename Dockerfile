# kpi-monitor worker image (used by docker-compose.yml)
FROM python:3.11.7-slim-bookworm
WORKDIR /app
COPY pyproject.toml README.md ./
COPY stream ./stream
COPY agents ./agents
COPY rulebook ./rulebook
COPY autopause ./autopause
COPY ops/kpi-rules.yaml ./ops/kpi-rules.yaml
RUN pip install --no-cache-dir .
# Beyond loopback every endpoint needs KPI_WEB_TOKEN (the worker refuses to start without it).
ENV KPI_WEB_HOST=0.0.0.0 KPI_WEB_PORT=6066 KPI_RULES=/app/ops/kpi-rules.yaml
EXPOSE 6066
# The pauser's ledger directory (a compose volume copies this ownership when first created).
RUN mkdir -p /var/lib/kpi-pauser && chown nobody /var/lib/kpi-pauser
USER nobody
ENTRYPOINT ["kpi-monitor"]
CMD ["run"]
