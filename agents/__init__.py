"""Kafka-facing side of kpi-monitor: the Faust app, its agent, metrics, CLI and embedded broker."""
