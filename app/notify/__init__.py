"""Notifications (contract 11): channels, the durable outbox and its sender, silences."""
