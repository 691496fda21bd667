"""Pure stream-processing core of kpi-monitor: no Kafka, no Faust, no clocks of its own."""
