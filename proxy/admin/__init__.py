"""The admin listener (issue 17): Prometheus metrics, liveness and readiness over HTTP."""
