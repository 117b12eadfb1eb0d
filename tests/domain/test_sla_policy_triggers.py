"""A policy's triggers: ``triggers`` or a quoted ``"on"``; a YAML 1.1 bare ``on`` key (read as ``true``) is refused
by name, never taken as the default triggers."""

from __future__ import annotations

import pytest
import yaml
from pydantic import ValidationError

from nemo_kernel.domain.sla import Policy, PolicyTrigger


@pytest.mark.parametrize("written", ["triggers: [violated]", '"on": [violated]', "'on': [violated]"])
def test_triggers_and_a_quoted_on_name_the_triggers(written: str) -> None:
    policy = Policy.model_validate(yaml.safe_load(f"action: move\n{written}\n"))
    assert policy.on == [PolicyTrigger.VIOLATED]


@pytest.mark.parametrize(
    ("written", "words"),
    [
        ("on: [violated]", "YAML 1.1"),  # PyYAML reads the key as True
        ('triggers: [violated]\n"on": [predicted]', "not both"),
    ],
)
def test_a_bare_on_or_both_names_are_refused_naming_on(written: str, words: str) -> None:
    with pytest.raises(ValidationError) as refused:
        Policy.model_validate(yaml.safe_load(f"action: move\n{written}\n"))
    [error] = refused.value.errors()
    assert error["loc"] == ("on",) and words in error["msg"]
