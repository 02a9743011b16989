"""Running the service: metrics, health, logs and periodic tasks."""
