"""`rayscale operator --feature-gates`: KubeRay's syntax, KubeRay's defaults."""

from __future__ import annotations

import pytest

from rayscale.cli.operator_cmd import parse_feature_gates


def test_raycronjob_is_off_unless_turned_on() -> None:
    assert parse_feature_gates("") == frozenset()
    assert parse_feature_gates("RayCronJob=true") == {"RayCronJob"}
    assert parse_feature_gates("RayCronJob=True, RayCronJob=false") == frozenset()


def test_gates_rayscale_lacks_are_ignored_and_bad_syntax_refused() -> None:
    assert parse_feature_gates("RayJobDeletionPolicy=true,RayCronJob=true") == {"RayCronJob"}
    with pytest.raises(ValueError, match="expected <gate>=true or <gate>=false"):
        parse_feature_gates("RayCronJob")
    with pytest.raises(ValueError, match="expected"):
        parse_feature_gates("RayCronJob=yes")
