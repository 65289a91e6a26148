"""The one `ray start` builder: argument lists, managed params, resources from the spec."""

from __future__ import annotations

import pytest

from rayscale.raystart import RayStart, ray_start_argv


def test_worker_command_is_an_argument_list_with_resources_and_labels() -> None:
    argv = ray_start_argv(
        "ray",
        {"num-cpus": "8", "address": "evil:1", "object-manager-port": "8076"},
        RayStart(node_ip="127.10.1.2", resources={"CPU": 1, "memory": 2**30, "TPU": 4},
                 address="127.10.0.2:6379", temp_dir="/tmp/rs/x/w0",
                 labels={"rayscale.io/node": "small-0", "rayscale.io/group": "small"}),
    )
    assert argv[:3] == ["ray", "start", "--address=127.10.0.2:6379"]
    assert "--num-cpus=1" in argv and "--num-cpus=8" not in argv  # resources come from the spec
    assert "--memory=1073741824" in argv
    assert '--resources={"TPU": 4}' in argv
    assert "--labels=rayscale.io/group=small,rayscale.io/node=small-0" in argv
    assert "--object-manager-port=8076" in argv  # other user params pass through
    assert "--address=evil:1" not in argv  # managed params cannot be overridden
    assert argv[-1] == "--block"


def test_head_command_and_overrides_win() -> None:
    argv = ray_start_argv(
        "ray", {"dashboard-host": "0.0.0.0", "num-cpus": "0"},
        RayStart(node_ip="127.10.0.2", resources={"CPU": 0}, gcs_port=6390,
                 overrides={"dashboard-host": "127.10.0.2", "no-monitor": "true"}),
    )
    assert argv[:4] == ["ray", "start", "--head", "--port=6390"]
    assert "--dashboard-host=127.10.0.2" in argv and "--dashboard-host=0.0.0.0" not in argv
    assert "--num-cpus=0" in argv and "--no-monitor" in argv


@pytest.mark.parametrize("bad", ["x; rm -rf /", "--evil", "A B", ""])
def test_param_names_are_validated(bad: str) -> None:
    with pytest.raises(ValueError, match="rayStartParams"):
        ray_start_argv("ray", {bad: "1"}, RayStart(node_ip="127.0.0.3", resources={}))


def test_values_with_shell_characters_stay_one_argument() -> None:
    argv = ray_start_argv("ray", {"runtime-env-agent-port": "1; echo pwned"},
                          RayStart(node_ip="127.0.0.3", resources={}))
    assert "--runtime-env-agent-port=1; echo pwned" in argv


def test_the_generated_option_table_matches_the_installed_ray() -> None:
    from rayscale.raystart import OPTIONS_MODULE, options_module_text

    assert OPTIONS_MODULE.read_text() == options_module_text(), (
        "Ray's `ray start` options changed: run `python -m rayscale.raystart`"
    )


def test_flags_are_written_as_flags_and_false_flags_left_out() -> None:
    argv = ray_start_argv(
        "ray", {"disable-usage-stats": "true", "enable-object-reconstruction": "false",
                "include-log-monitor": "false"},
        RayStart(node_ip="127.10.0.2", resources={}),
    )
    assert "--disable-usage-stats" in argv
    assert not any("enable-object-reconstruction" in a for a in argv)
    assert "--include-log-monitor=false" in argv  # a boolean option takes its value
