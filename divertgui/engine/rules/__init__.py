"""Network conditions and rewrite rules, and the pipeline that applies them.

    Pipeline(rules, seed).process(packets, now_ns) -> packets to send now
    Pipeline.due(now_ns), next_deadline(), release_all(), stats()
    Pipeline.update(rule dicts) -> packets removed rules held; rules with the same "id" keep their state
    rule_from_dict / rules_from_dicts / rules_to_dicts, RULE_KINDS
    save_profile / load_profile / list_profiles / list_presets
    run_conditions (runner.py) drives a Divert handle through a Pipeline.
"""

from divertgui.engine.rules.bandwidth import Bandwidth
from divertgui.engine.rules.base import COUNTERS, DIRECTIONS, Param, Rule, RuleError
from divertgui.engine.rules.drop import Drop
from divertgui.engine.rules.duplicate import Duplicate
from divertgui.engine.rules.lag import Lag
from divertgui.engine.rules.payload_replace import PayloadReplace
from divertgui.engine.rules.pipeline import Pipeline
from divertgui.engine.rules.profiles import (delete_profile, list_presets, list_profiles, load_profile,
                                             profiles_dir, read_profile_file, save_profile)
from divertgui.engine.rules.registry import RULE_KINDS, rule_from_dict, rules_from_dicts, rules_to_dicts
from divertgui.engine.rules.reorder import OutOfOrder
from divertgui.engine.rules.reset import Reset
from divertgui.engine.rules.set_field import SetField
from divertgui.engine.rules.tamper import Tamper
from divertgui.engine.rules.throttle import Throttle

__all__ = [
    "Bandwidth", "Drop", "Duplicate", "Lag", "OutOfOrder", "PayloadReplace", "Reset", "SetField",
    "Tamper", "Throttle", "Rule", "RuleError", "Param", "COUNTERS", "DIRECTIONS", "Pipeline",
    "RULE_KINDS", "rule_from_dict", "rules_from_dicts", "rules_to_dicts",
    "save_profile", "load_profile", "read_profile_file", "delete_profile", "list_profiles",
    "list_presets", "profiles_dir",
]
