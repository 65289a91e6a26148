"""The history store: clusters, scaling rounds, events and jobs, kept after a cluster is gone."""
