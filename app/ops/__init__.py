"""Running the service: metrics, health, logs, periodic tasks and the one-service lock."""
