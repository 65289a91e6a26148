"""`rayscale status`'s demand lines: label selectors tell apart demand of one shape."""

from __future__ import annotations

from rayscale.cli.local_cmds import _demand_lines


def test_a_labelled_infeasible_task_does_not_make_its_plain_twin_infeasible() -> None:
    plain = {"resources": {"CPU": 1}, "count": 3}
    labelled = {"resources": {"CPU": 1}, "count": 1,
                "label_selector": {"ray.io/market-type": "on-demand"}}
    gang = {"strategy": "PACK", "bundles": [{"CPU": 1}], "count": 1,
            "bundle_label_selector": [{"zone": "a"}]}
    status = {"demand": {"tasks": [plain, labelled], "gangs": [gang], "floor": []},
              "plan": {"infeasible": {"tasks": [labelled], "gangs": [], "floor": []}}}
    lines = _demand_lines(status)
    split = lines.index("  infeasible (no worker group can hold these):")
    assert lines[:split] == [
        "  {'CPU': 1}: 3+ pending tasks/actors",
        "  [{'CPU': 1}] (PACK) bundle_label_selector=[{'zone': 'a'}]: 1+ pending placement groups",
    ]
    assert lines[split + 1:] == [
        "    {'CPU': 1} label_selector={'ray.io/market-type': 'on-demand'}: "
        "1+ pending tasks/actors"]
