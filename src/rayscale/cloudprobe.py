"""Keep Ray's dashboard from asking cloud metadata servers where it runs.

When Ray's dashboard starts, its usage-stats module calls
``get_cluster_config_to_report("~/ray_bootstrap_config.yaml")`` *before* it
checks whether usage stats are enabled. If that file is missing, Ray sends
HTTP requests to 169.254.169.254 (Azure, AWS) and metadata.google.internal
(GCP), one second each: traffic leaving the machine, even with
``RAY_USAGE_STATS_ENABLED=0``. If the file exists, Ray reads it and asks
nobody. That file is what Ray's own cluster launcher leaves on a head it
started, so writing one is the way Ray allows to say "this cluster was
launched by an autoscaler; do not probe".

rayscale writes a minimal one into the home directory of every head it starts
when none is there (it never overwrites or removes one). Ray Tune reads the
same file's presence as "this cluster autoscales", which is true of ours.

The same dashboard module has a second way out: with usage stats *disabled*,
it still POSTs a one-off "usage stats are disabled" notice to
usage-stats.ray.io when it starts (``_report_disabled_usage_sync``), unless the
cluster was started by ``ray.init()``. Ray takes that URL from
``RAY_USAGE_STATS_REPORT_URL``; a ``file:`` URL makes its ``requests`` call
fail before any DNS query or connection. :data:`NO_REPORT_ENV` is what every
head's environment needs (tests/e2e/test_no_traffic.py shows both leaks and
that these settings close them).
"""

from __future__ import annotations

import os
from pathlib import Path

BOOTSTRAP_CONFIG_NAME = "ray_bootstrap_config.yaml"

USAGE_REPORT_URL_ENV = "RAY_USAGE_STATS_REPORT_URL"
NO_USAGE_REPORT_URL = "file:///dev/null"  # requests: InvalidSchema, no socket at all
NO_REPORT_ENV = {"RAY_USAGE_STATS_ENABLED": "0", USAGE_REPORT_URL_ENV: NO_USAGE_REPORT_URL}

BOOTSTRAP_CONFIG = """\
# Written by rayscale. Its presence stops Ray's dashboard from probing cloud
# metadata servers (169.254.169.254, metadata.google.internal) at startup;
# Ray Tune reads it as "this cluster autoscales". Safe to keep; rayscale never
# overwrites a file of this name that it did not write.
cluster_name: rayscale
provider:
  type: {provider}
"""


def ensure_bootstrap_config(home: Path, provider: str = "rayscale") -> Path:
    """``home/ray_bootstrap_config.yaml``, written (atomically) only when absent."""
    path = home / BOOTSTRAP_CONFIG_NAME
    if path.exists():
        return path
    home.mkdir(parents=True, exist_ok=True)
    tmp = home / f".{BOOTSTRAP_CONFIG_NAME}.{os.getpid()}.tmp"
    tmp.write_text(BOOTSTRAP_CONFIG.format(provider=provider))
    try:
        os.link(tmp, path)  # fails if another writer got there first: theirs stays
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return path
