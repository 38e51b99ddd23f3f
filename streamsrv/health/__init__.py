"""Liveness, readiness, detailed checks and Prometheus metrics."""
