# kpi-monitor worker image (used by docker-compose.yml)
FROM python:3.11.7-slim-bookworm
WORKDIR /app
COPY pyproject.toml README.md ./
COPY stream ./stream
COPY agents ./agents
COPY rulebook ./rulebook
COPY autopause ./autopause
RUN pip install --no-cache-dir .
ENV KPI_WEB_HOST=0.0.0.0 KPI_WEB_PORT=6066
EXPOSE 6066
USER nobody
ENTRYPOINT ["kpi-monitor"]
CMD ["run"]
