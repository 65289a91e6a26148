"""Providers: where worker nodes come from (local processes, Kubernetes pods)."""
