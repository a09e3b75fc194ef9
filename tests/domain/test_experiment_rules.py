"""The [[experiments]] rules format: what parses, and errors that name the key."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from recovery.domain.cancel_rules import parse_cancel_flow_rules
from recovery.domain.experiment_rules import (
    ExperimentRules,
    ExperimentRulesError,
    parse_experiments,
)
from recovery.domain.experiments import HOLDOUT, CancelFlowOptions, DunningOptions
from recovery.domain.offers import OfferKind
from recovery.domain.retry_policy import RetryRules
from recovery.rules import (
    DEFAULT_RULES_PATH,
    Rules,
    RulesError,
    load_rules_data,
    parse_retry_rules,
)

DEFAULTS = load_rules_data(None)
DUNNING: dict[str, Any] = {
    "key": "dunning-q1",
    "applies_to": "dunning",
    "holdout": 0.1,
    "routing": "thompson",
    "min_share": 0.1,
    "arms": [
        {"name": "smart"},
        {"name": "email_only", "channels": ["email"]},
        {
            "name": "day_3_5_7",
            "retry": [3, 5, 7],
            "first_reminder_delay_hours": 24,
            "sequences": {"soft": [{"channel": "email", "template": "soft_decline", "day": 0}]},
        },
    ],
}
CANCEL: dict[str, Any] = {
    "key": "cancel-q1",
    "applies_to": "cancel_flow",
    "holdout": 0.05,
    "arms": [{"name": "pause_first", "offers": ["pause"], "weight": 3}, {"name": "everything"}],
}


def rules_with(*experiments: dict[str, Any], **retry: Any) -> ExperimentRules:
    data = copy.deepcopy(DEFAULTS)
    data["experiments"] = copy.deepcopy(list(experiments))
    flow = parse_cancel_flow_rules(data)
    return parse_experiments(data, flow, RetryRules(**retry))


def test_no_experiment_is_active_by_default() -> None:
    rules = Rules.load(None).experiments
    assert rules.experiments == ()
    assert rules.active("dunning") is None and rules.active("cancel_flow") is None


def test_both_kinds_parse_into_arms_with_their_options() -> None:
    rules = rules_with(DUNNING, CANCEL)
    dunning = rules.active("dunning")
    assert dunning is not None and dunning.routing == "thompson" and dunning.min_share == 0.1
    smart, email_only, fixed = (a.options for a in dunning.arms)
    assert smart == DunningOptions()  # our policy, both channels, no delay
    assert isinstance(email_only, DunningOptions) and email_only.channels == ("email",)
    assert isinstance(fixed, DunningOptions) and fixed.retry_days == (3, 5, 7)
    assert fixed.first_reminder_delay_hours == 24 and [s.day for s in fixed.sequences["soft"]] == [
        0
    ]
    cancel = rules.get("cancel-q1")
    assert cancel is not None and cancel is rules.active("cancel_flow")
    assert cancel.arms[0].options == CancelFlowOptions(frozenset({OfferKind.PAUSE}))
    assert cancel.arms[1].options == CancelFlowOptions(None)  # every offer
    shares = cancel.fixed_shares()
    assert (shares.holdout, shares["pause_first"], shares["everything"]) == pytest.approx(
        (0.05, 0.7125, 0.2375)
    )


def test_an_ended_experiment_stays_listed_beside_the_running_one() -> None:
    ended = {**DUNNING, "key": "dunning-q0", "active": False}
    rules = rules_with(ended, DUNNING)
    assert [e.key for e in rules.experiments] == ["dunning-q0", "dunning-q1"]
    assert rules.active("dunning").key == "dunning-q1"  # type: ignore[union-attr]


def test_the_commented_example_in_the_default_rules_is_valid(tmp_path: Path) -> None:
    text = DEFAULT_RULES_PATH.read_text()
    block = text[text.index("# BEGIN experiments") : text.index("# END experiments")]
    example = [line[2:] for line in block.splitlines() if re.match(r"# (\[\[|[a-z_]+ = )", line)]
    assert example[0] == "[[experiments]]" and len(example) > 15
    path = tmp_path / "rules.toml"
    path.write_text("\n".join(example) + "\n")
    experiment = Rules.load(path).experiments.active("dunning")
    assert experiment is not None
    assert [a.name for a in experiment.arms] == ["smart", "email_only", "day_3_5_7"]


def test_a_variants_only_file_is_a_fixed_experiment_without_holdout(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(
        """
[[cancel_flow.variants]]
name = "control"
weight = 1
offers = []

[[cancel_flow.variants]]
name = "offers"
weight = 3
offers = ["pause"]
"""
    )
    rules = Rules.load(path)
    experiment = rules.experiments.active("cancel_flow")
    assert experiment is not None and experiment.key == "cancel_flow.variants:cancel-flow-1"
    assert experiment.holdout == 0 and experiment.routing == "fixed"
    assert [a.options for a in experiment.arms] == [
        CancelFlowOptions(frozenset()),
        CancelFlowOptions(frozenset({OfferKind.PAUSE})),
    ]
    for customer in ("cus_1", "cus_2", "cus_3", "cus_42"):
        assert experiment.assign(customer) == rules.cancel_flow.assign_variant(customer).name
    assert rules.experiments.active("dunning") is None


def test_experiments_in_a_business_file_reach_the_rules(tmp_path: Path) -> None:
    path = tmp_path / "rules.toml"
    path.write_text(
        """
[[experiments]]
key = "dunning-q1"
applies_to = "dunning"
holdout = 0.10
routing = "thompson"
min_share = 0.10
[[experiments.arms]]
name = "smart"
[[experiments.arms]]
name = "email_only"
channels = ["email"]
"""
    )
    experiment = Rules.load(path).experiments.active("dunning")
    assert experiment is not None and experiment.fixed_shares().as_dict() == {
        HOLDOUT: 0.1,
        "smart": 0.45,
        "email_only": 0.45,
    }


def test_a_bad_experiment_in_a_business_file_is_a_rules_error_naming_the_key(
    tmp_path: Path,
) -> None:
    path = tmp_path / "rules.toml"
    path.write_text('[[experiments]]\nkey = "x"\napplies_to = "dunning"\nholdout = 1.5\n')
    with pytest.raises(RulesError, match=r"experiments\[0\]\.holdout"):
        _ = Rules.load(path).experiments


def change(experiment: dict[str, Any], path: list[Any], value: Any) -> dict[str, Any]:
    changed = copy.deepcopy(experiment)
    node: Any = changed
    for key in path[:-1]:
        node = node[key]
    if value is DELETE:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return changed


DELETE = object()
D, C = DUNNING, CANCEL
BAD: list[tuple[dict[str, Any], list[Any], Any, str]] = [
    (D, ["colour"], "red", "unknown key in rules file: experiments[0].colour"),
    (D, ["key"], "Dunning Q1", "experiments[0].key must be"),
    (D, ["applies_to"], "checkout", "experiments[0].applies_to"),
    (D, ["active"], "yes", "experiments[0].active"),
    (D, ["holdout"], DELETE, "experiments[0].holdout is required"),
    (D, ["holdout"], 1.0, "experiments[0].holdout must be a share"),
    (D, ["holdout"], -0.1, "experiments[0].holdout must be a share"),
    (D, ["holdout"], float("nan"), "experiments[0].holdout must be a share"),
    (D, ["holdout"], True, "experiments[0].holdout must be a share"),
    (D, ["routing"], "bandit", "experiments[0].routing"),
    (D, ["min_share"], DELETE, "experiments[0].min_share is required"),
    (D, ["min_share"], 0.0, "experiments[0].min_share must be above 0"),
    (D, ["min_share"], 0.31, "experiments[0].min_share must be above 0, and 3 arms"),
    (C, ["min_share"], 0.1, 'experiments[0].min_share applies to routing = "thompson" only'),
    (D, ["arms"], [], "experiments[0].arms must list at least one arm"),
    (D, ["arms"], [{"name": "smart"}], "experiments[0].arms: one arm"),
    ({**C, "holdout": 0}, ["arms"], [{"name": "x"}], "experiments[0].arms: one arm"),
    (D, ["arms", 1, "name"], "smart", "experiments[0].arms has two arms named smart"),
    (D, ["arms", 1, "name"], "holdout", "experiments[0].arms[1].name cannot be"),
    (D, ["arms", 1, "name"], "Email", "experiments[0].arms[1].name must be"),
    (D, ["arms", 1, "weight"], 2, "experiments[0].arms[1].weight applies to routing"),
    (C, ["arms", 0, "weight"], 0, "experiments[0].arms[0].weight must be a number above 0"),
    (D, ["arms", 1, "colour"], "red", "unknown key in rules file: experiments[0].arms[1].colour"),
    (D, ["arms", 1, "offers"], [], "experiments[0].arms[1].offers is for cancel_flow"),
    (C, ["arms", 1, "channels"], [], "experiments[0].arms[1].channels is for dunning"),
    (D, ["arms", 1, "channels"], ["email", "fax"], "experiments[0].arms[1].channels[1]"),
    (D, ["arms", 1, "channels"], ["sms", "sms"], "experiments[0].arms[1].channels names sms"),
    (D, ["arms", 1, "channels"], "email", "experiments[0].arms[1].channels must be a list"),
    (D, ["arms", 2, "retry"], "stripe", "experiments[0].arms[2].retry must be"),
    (D, ["arms", 2, "retry"], [], "experiments[0].arms[2].retry must be"),
    (D, ["arms", 2, "retry"], [0, 3], "experiments[0].arms[2].retry[0] must be a whole number"),
    (D, ["arms", 2, "retry"], [3, 3], "experiments[0].arms[2].retry[1] must come after"),
    (D, ["arms", 2, "retry"], [5, 3], "experiments[0].arms[2].retry[1] must come after"),
    (D, ["arms", 2, "retry"], [2.5], "experiments[0].arms[2].retry[0] must be a whole number"),
    (D, ["arms", 2, "retry"], [3, 29], "experiments[0].arms[2].retry[1] is day 29"),
    (D, ["arms", 2, "retry"], list(range(1, 9)), "allows 7 after the first failure"),
    (D, ["arms", 2, "first_reminder_delay_hours"], -1, "first_reminder_delay_hours"),
    (D, ["arms", 2, "first_reminder_delay_hours"], 28 * 24, "first_reminder_delay_hours"),
    (D, ["arms", 2, "sequences", "urgent"], [], "experiments[0].arms[2].sequences.urgent"),
    (
        D,
        ["arms", 2, "sequences", "soft", 0, "template"],
        "hello",
        "experiments[0].arms[2].sequences.soft[0].template",
    ),
    (
        D,
        ["arms", 1, "sequences"],
        {"soft": [{"channel": "sms", "template": "soft_decline", "day": 1}]},
        "experiments[0].arms[1].sequences.soft[0].channel is sms",
    ),
    (C, ["arms", 0, "offers"], ["gift"], "experiments[0].arms[0].offers[0] must be one of"),
    (C, ["arms", 0, "offers"], ["pause", "pause"], "experiments[0].arms[0].offers names pause"),
    (C, ["arms", 0, "offers"], "pause", "experiments[0].arms[0].offers must be a list"),
]


@pytest.mark.parametrize(
    ("base", "path", "value", "message"),
    BAD,
    ids=[f"{b[3]} ({'deleted' if b[2] is DELETE else repr(b[2])})" for b in BAD],
)
def test_invalid_experiments_name_the_key(
    base: dict[str, Any], path: list[Any], value: Any, message: str
) -> None:
    with pytest.raises(ExperimentRulesError, match=re.escape(message)):
        rules_with(change(base, path, value))


def switch_off_pause(data: dict[str, Any]) -> None:
    data["offers"]["pause"]["enabled"] = False


def two_variants(data: dict[str, Any]) -> None:
    data["cancel_flow"]["variants"] = [
        {"name": "a", "weight": 1, "offers": []},
        {"name": "b", "weight": 1, "offers": ["pause"]},
    ]


def stripe_retries(data: dict[str, Any]) -> None:
    data["retry"]["retry_owner"] = "stripe"


@pytest.mark.parametrize(
    ("experiments", "edit", "message"),
    [
        ([D, {**D, "key": "dunning-q2"}], None, "experiments[1].active: experiments[0]"),
        ([D, {**D, "active": False}], None, "experiments[1].key 'dunning-q1'"),
        ([D], stripe_retries, "experiments[0].arms[2].retry sets a retry schedule"),
        ([C], switch_off_pause, "offers.pause.enabled = false"),
        ([C], two_variants, "cancel_flow.variants lists several variants"),
    ],
)
def test_conflicts_across_experiments_and_sections_name_the_key(
    experiments: list[dict[str, Any]],
    edit: Callable[[dict[str, Any]], None] | None,
    message: str,
) -> None:
    data = copy.deepcopy(DEFAULTS)
    data["experiments"] = copy.deepcopy(experiments)
    if edit is not None:
        edit(data)
    retry = parse_retry_rules(data["retry"])
    with pytest.raises(ExperimentRulesError, match=re.escape(message)):
        parse_experiments(data, parse_cancel_flow_rules(data), retry)


def test_an_ended_experiment_may_name_an_offer_switched_off_since() -> None:
    data = copy.deepcopy(DEFAULTS)
    data["experiments"] = [{**CANCEL, "active": False}]
    data["offers"]["pause"]["enabled"] = False
    rules = parse_experiments(data, parse_cancel_flow_rules(data), RetryRules())
    assert rules.active("cancel_flow") is None and rules.get("cancel-q1") is not None


toml_value = st.recursive(
    st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
    | st.sampled_from(["ours", "email", "sms", "pause", "soft", "holdout", "thompson"]),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
PLACES = [
    [],
    ["arms", 0],
    ["arms", 2],
    ["arms", 2, "sequences"],
    ["arms", 2, "sequences", "soft", 0],
]


@settings(max_examples=400, derandomize=True, deadline=None)
@given(
    place=st.sampled_from(PLACES),
    key=st.sampled_from(
        [
            "key",
            "applies_to",
            "active",
            "holdout",
            "routing",
            "min_share",
            "arms",
            "name",
            "weight",
            "retry",
            "channels",
            "sequences",
            "first_reminder_delay_hours",
            "offers",
            "soft",
            "channel",
            "template",
            "day",
            "days_before_end",
            "other",
        ]
    ),
    value=toml_value,
    kind=st.sampled_from([DUNNING, {**CANCEL, "arms": [*CANCEL["arms"], {"name": "third"}]}]),
)
def test_any_value_anywhere_parses_or_is_an_error_naming_a_key(
    place: list[Any], key: str, value: Any, kind: dict[str, Any]
) -> None:
    experiment = copy.deepcopy(kind)
    node: Any = experiment
    try:
        for step in place:
            node = node[step]
    except (KeyError, IndexError, TypeError):
        return
    node[key] = value
    try:
        rules_with(experiment)
    except ExperimentRulesError as exc:
        assert "experiments[0]" in str(exc)
