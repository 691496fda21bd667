"""The rules file (``ops/kpi-rules.yaml``) as one model, and what is compiled from it: Prometheus
recording and alert rules, Grafana alerting and dashboards. The worker reads the same model to
decide on campaigns itself (``autopause``)."""
