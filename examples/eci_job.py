"""The seeds' ECI job (ACK's "Elastic scaling of ECI nodes based on the Ray autoscaler"):
two tasks of 1 CPU each. The head has 0 CPUs, so the autoscaler adds two workers; with the
chart's seed values (worker label alibabacloud.com/eci: "true") they run on the elastic
(virtual) node. Submit it with `ray job submit --working-dir examples -- python eci_job.py`.
"""

import socket
import time

import ray

ray.init()


@ray.remote(num_cpus=1)
def get_task_hostname() -> str:
    time.sleep(10)
    return socket.gethostbyname(socket.gethostname())


object_refs = [get_task_hostname.remote() for _ in range(2)]
ray.wait(object_refs)
for t in object_refs:
    print(ray.get(t))
