"""Kubernetes mode: reconcile ray.io/v1 RayClusters into pods and services.

``desired`` builds manifests, ``reconcile`` decides (pure), ``handlers`` wires
both to the API with kopf (watching) and lightkube (typed calls).
"""
