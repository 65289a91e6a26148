"""Local mode's Prometheus file_sd file (rayscale.local.scrape), and the prometheus.yml
docs/observability.md gives for it, checked by Prometheus's own promtool."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from rayscale.local import scrape
from rayscale.local.store import ClusterDir, ClusterRecord, NodeRecord

DOC = Path(__file__).parent.parent / "docs" / "observability.md"


def cluster(home: Path, node_metrics: bool = False) -> tuple[ClusterDir, ClusterRecord]:
    cdir = ClusterDir("demo", home)
    cdir.create()
    record = ClusterRecord(
        name="demo", id="abc", spec_file="/x.yaml", slot=12, head_ip="127.12.0.2",
        gcs_port=6000, dashboard_port=6001, client_port=6002, temp_dir="/tmp/x", created=0.0,
        metrics_port=41877, dashboard_metrics_port=40211, head_metrics_export_port=39000,
        ray_node_metrics=node_metrics)
    cdir.save(record)
    return cdir, record


def node(index: int, group: str, state: str = "started", port: int | None = 39001
         ) -> NodeRecord:
    return NodeRecord(id=f"{group}-{index}", index=index, group=group,
                      ip=f"127.12.1.{2 + index}", state=state, launched_at=0.0,
                      metrics_export_port=port)  # type: ignore[arg-type]


def test_the_autoscaler_and_the_dashboard_and_no_node_while_ray_metrics_are_off(
        tmp_path: Path) -> None:
    _, record = cluster(tmp_path)
    groups = scrape.target_groups(record, [node(0, "small")])
    assert groups == [
        {"targets": ["127.12.0.2:41877"],
         "labels": {"job": "rayscale-autoscaler", "ray_io_cluster": "demo",
                    "rayscale_mode": "local"}},
        {"targets": ["127.12.0.2:40211"],
         "labels": {"job": "ray", "ray_io_cluster": "demo", "rayscale_component": "dashboard"}},
    ]


def test_each_started_node_with_ray_metrics_on_one_group_per_worker_group(
        tmp_path: Path) -> None:
    _, record = cluster(tmp_path, node_metrics=True)
    nodes = [node(2, "big", port=39003), node(0, "small", port=39001),
             node(1, "small", "stopping", port=39002), node(3, "small", "queued", port=None),
             node(4, "small", "launching", port=None)]
    node_groups = [g for g in scrape.target_groups(record, nodes)
                   if g["labels"].get("rayscale_component") == "node"]
    assert [(g["labels"]["ray_io_group"], g["targets"]) for g in node_groups] == [
        ("headgroup", ["127.12.0.2:39000"]),
        ("big", ["127.12.1.4:39003"]),
        ("small", ["127.12.1.2:39001", "127.12.1.3:39002"]),
    ]
    assert all(g["labels"]["job"] == "ray" and g["labels"]["ray_io_cluster"] == "demo"
               for g in node_groups)


def test_written_atomically_private_and_removed(tmp_path: Path) -> None:
    cdir, _ = cluster(tmp_path)
    text = scrape.write(cdir)
    path = tmp_path / "prometheus" / "demo.json"
    assert scrape.sd_file(cdir) == path
    assert path.read_text() == text and json.loads(text)[0]["targets"] == ["127.12.0.2:41877"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert os.listdir(path.parent) == ["demo.json"]  # no temp file left
    scrape.remove(cdir)
    assert not path.exists()
    scrape.remove(cdir)  # twice: nothing to do


def test_the_autoscaler_rewrites_it_when_nodes_come_and_go(tmp_path: Path) -> None:
    cdir, _ = cluster(tmp_path, node_metrics=True)
    sd = scrape.ScrapeFile(cdir, check_s=30.0)
    assert sd.update([], now=0.0)  # the first round writes it
    assert not sd.update([], now=1.0)
    cdir.save_node(node(0, "small"))
    assert sd.update(["small-0"], now=2.0)
    assert "127.12.1.2:39001" in scrape.sd_file(cdir).read_text()
    assert not sd.update(["small-0"], now=3.0)
    cdir.forget_node("small-0")
    assert sd.update([], now=4.0)
    assert "127.12.1.2" not in scrape.sd_file(cdir).read_text()
    # deleted by hand (or overwritten): put back at the next look at the disk
    scrape.sd_file(cdir).unlink()
    assert not sd.update([], now=5.0)
    assert sd.update([], now=40.0)
    assert scrape.sd_file(cdir).exists()


def test_node_changes_do_not_touch_it_while_ray_metrics_are_off(tmp_path: Path) -> None:
    cdir, _ = cluster(tmp_path)
    sd = scrape.ScrapeFile(cdir)
    assert sd.update([], now=0.0)
    cdir.save_node(node(0, "small"))
    assert not sd.update(["small-0"], now=1.0)


def test_the_switch_and_the_port_as_ray_reads_them() -> None:
    assert not scrape.ray_node_metrics({})
    assert not scrape.ray_node_metrics({"RAY_enable_metrics_collection": "0"})
    assert scrape.ray_node_metrics({"RAY_enable_metrics_collection": "1"})
    assert scrape.ray_node_metrics({"RAY_enable_metrics_collection": "True"})
    argv = ["ray", "start", "--address=127.1.0.2:1", "--metrics-export-port=39001", "--block"]
    assert scrape.export_port(argv) == 39001
    assert scrape.export_port(["ray", "start"]) is None


def documented_config(sd_dir: Path) -> str:
    """The prometheus.yml of docs/observability.md, its file_sd path pointed at sd_dir."""
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(), re.S)
    (config,) = [b for b in blocks if "file_sd_configs" in b]
    assert "/home/me/.rayscale/prometheus/*.json" in config
    return config.replace("/home/me/.rayscale/prometheus", str(sd_dir))


def test_promtool_accepts_the_documented_config_and_the_file(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool is missing: scripts/install.sh installs Debian's prometheus")
    cdir, _ = cluster(tmp_path / "home", node_metrics=True)
    cdir.save_node(node(0, "small"))
    scrape.write(cdir)
    config = tmp_path / "prometheus.yml"
    config.write_text(documented_config(tmp_path / "home" / "prometheus"))
    out = subprocess.run([promtool, "check", "config", str(config)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr
    # promtool reads the file_sd files the config names: a bad one fails the check
    scrape.sd_file(cdir).write_text('[{"targets": "not a list"}]')
    out = subprocess.run([promtool, "check", "config", str(config)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode != 0
