"""The rules list the Session applies: one row per rule, its settings and live counters.

Rows are plain rule dicts (the engine's JSON form), every parameter present.
Each change bumps `version`; the counters of a "rows" event are shown only
when they count that version of the rules, so an event sent before a change
never lands on the wrong row. Every rule has an "id" the session knows it
by, so that an edit or a move keeps its counters and held packets.
"""

from __future__ import annotations

import uuid

from PySide6.QtCore import QByteArray, QMimeData, QModelIndex, Qt, Signal
from PySide6.QtGui import QBrush, QColor

from divertgui.engine.rules import (
    COUNTERS,
    DIRECTIONS,
    RULE_KINDS,
    RuleError,
    rule_from_dict,
    rules_from_dicts,
)
from divertgui.models.named_columns import NamedColumnsModel

COLUMNS = ("On", "Rule", "Direction", "Matched", "Dropped", "Delayed", "Duplicated", "Modified", "Filter",
           "Parameters")
ENABLED, NAME, DIRECTION = range(3)
COUNTER_COLUMNS = {3: "matched", 4: "dropped", 5: "delayed", 6: "duplicated", 7: "modified"}
FILTER, PARAMETERS = 8, 9
MATCHED = 3
KIND_TITLES = {
    "lag": "Lag", "drop": "Drop", "throttle": "Throttle", "out_of_order": "Out of order",
    "duplicate": "Duplicate", "tamper": "Tamper", "reset": "Reset (TCP RST)", "bandwidth": "Bandwidth",
    "set_field": "Set field", "payload_replace": "Payload find/replace",
}
ROW_MIME = "application/x-divertgui-rule-row"
ERROR_BRUSH = QBrush(QColor("#fbd3d3"))
DISABLED_BRUSH = QBrush(QColor("#8a8a8a"))
UNREACHABLE_BRUSH = QBrush(QColor("#b00020"))


def new_rule_id() -> str:
    # Random rather than counted: ids restored from the settings must not meet new ones.
    return uuid.uuid4().hex[:12]


def kind_title(kind: str) -> str:
    return KIND_TITLES.get(kind, kind.replace("_", " ").capitalize())


def parameters_text(rule: dict) -> str:
    params = RULE_KINDS[rule["kind"]].params
    parts = []
    for key in params:
        value = rule.get(key)
        if isinstance(value, float):
            value = f"{value:g}"
        elif isinstance(value, dict):
            value = ", ".join(f"{k}={v}" for k, v in value.items()) or "{}"
        parts.append(f"{key}={value}")
    return " · ".join(parts)


class RulesModel(NamedColumnsModel):
    COLUMNS = COLUMNS
    rules_changed = Signal()

    def __init__(self, parent=None):
        super().__init__(parent)
        self._rules: list[dict] = []
        self._counters: list[dict] = []
        self._errors: list[str | None] = []
        self.version = 0
        self.captured = 0                       # packets the capture took, for "0 of N captured"
        self.capture_filter = "true"
        self.capture_layer = None
        self._unreachable: set[int] = set()     # rows whose filter excludes the capture filter's packets

    # reading ---------------------------------------------------------------
    @staticmethod
    def kinds() -> list[str]:
        return list(RULE_KINDS)

    @staticmethod
    def params(kind: str) -> dict:
        """The kind's declared parameters: name -> Param (default, low, high, choices)."""
        return dict(RULE_KINDS[kind].params)

    def rule(self, row: int) -> dict:
        return dict(self._rules[row])

    def counters(self, row: int) -> dict:
        return dict(self._counters[row])

    def error(self, row: int) -> str | None:
        return self._errors[row]

    def unreachable(self) -> list[int]:
        """Enabled rules whose filter cannot match anything the capture filter takes."""
        return sorted(self._unreachable)

    def set_capture_filter(self, text: str, layer) -> None:
        self.capture_filter, self.capture_layer = text or "true", layer
        self._check_reach()

    def _check_reach(self) -> None:
        from divertgui.engine.address import Layer
        from divertgui.engine.filter.overlap import texts_may_overlap
        layer = self.capture_layer if self.capture_layer is not None else Layer.NETWORK
        reach = {row for row, rule in enumerate(self._rules)
                 if rule["enabled"] and not self._errors[row]
                 and not texts_may_overlap(self.capture_filter, rule["filter"], layer)}
        if reach != self._unreachable:
            self._unreachable = reach
            if self._rules:
                self.dataChanged.emit(self.index(0, 0), self.index(len(self._rules) - 1, len(COLUMNS) - 1))

    def reach_problem(self, row: int) -> str | None:
        """Why a rule can never match, or None."""
        if row not in self._unreachable:
            return None
        rule = self._rules[row]
        return (f"rule {row + 1} ({kind_title(rule['kind'])} on `{rule['filter']}`) cannot match anything "
                f"the capture filter `{self.capture_filter}` takes")

    def is_valid(self) -> bool:
        return not any(self._errors)

    def to_dicts(self, ids: bool = False) -> list[dict]:
        """The rules as a profile keeps them; with `ids`, as the session knows them from one
        set_rules to the next."""
        if ids:
            return [dict(rule) for rule in self._rules]
        return [{k: v for k, v in rule.items() if k != "id"} for rule in self._rules]

    # changing ---------------------------------------------------------------
    def _changed(self) -> None:
        # Checked again as a whole: an error names its rule by its place in the list.
        for row, rule in enumerate(self._rules):
            try:
                rule_from_dict(rule, row)
                self._errors[row] = None
            except RuleError as exc:
                self._errors[row] = str(exc)
        self.version += 1
        self._unreachable = set()
        self._check_reach()
        if self._rules:
            self.dataChanged.emit(self.index(0, 0), self.index(len(self._rules) - 1, len(COLUMNS) - 1))
        self.rules_changed.emit()

    @staticmethod
    def _complete(data: dict) -> dict:
        """Every field of the rule, defaults filled in, in the engine's own form."""
        return rule_from_dict(data).to_dict()

    def add(self, kind: str, enabled: bool = False) -> int:
        """A new rule of `kind` with its defaults, at the end; returns its row."""
        if kind not in RULE_KINDS:
            raise RuleError(f"unknown kind {kind!r} (kinds: {', '.join(RULE_KINDS)})", "rule")
        row = len(self._rules)
        self.beginInsertRows(QModelIndex(), row, row)
        # From the declared defaults, not a built rule: some kinds (find/replace) need a
        # value before they are valid, and the row shows what is missing until then.
        defaults = {key: param.default for key, param in RULE_KINDS[kind].params.items()}
        self._rules.append({"id": new_rule_id(), "kind": kind, "enabled": enabled, "filter": "true", "direction": "both", **defaults})
        self._counters.append(dict.fromkeys(COUNTERS, 0))
        self._errors.append(None)
        self.endInsertRows()
        self._changed()
        return row

    def remove(self, row: int) -> None:
        self.beginRemoveRows(QModelIndex(), row, row)
        for column in (self._rules, self._counters, self._errors):
            del column[row]
        self.endRemoveRows()
        self._changed()

    def move(self, row: int, delta: int) -> int:
        """Moves a rule up (-1) or down (+1); returns where it is now."""
        target = max(0, min(len(self._rules) - 1, row + delta))
        if target != row:
            self.moveRows(QModelIndex(), row, 1, QModelIndex(), target + 1 if target > row else target)
        return target

    def moveRows(self, source_parent, source_row, count, destination_parent, destination_child) -> bool:
        if count != 1 or not 0 <= source_row < len(self._rules) or destination_child in (source_row,
                                                                                          source_row + 1):
            return False
        if not self.beginMoveRows(source_parent, source_row, source_row, destination_parent, destination_child):
            return False
        at = destination_child - 1 if destination_child > source_row else destination_child
        for column in (self._rules, self._counters, self._errors):
            column.insert(at, column.pop(source_row))
        self.endMoveRows()
        self._changed()
        return True

    def set_value(self, row: int, key: str, value) -> str | None:
        """Sets one field (enabled, name, filter, direction or a parameter); the rule's error or None.

        A value the engine refuses is kept, so the user can correct it, and the
        row shows the error; the rules are not applied until every row is valid.
        """
        rule = self._rules[row]
        if rule.get(key) == value:
            return self._errors[row]
        rule[key] = value
        self._changed()
        return self._errors[row]

    def set_error(self, row: int, message: str | None) -> None:
        self._errors[row] = message
        self.dataChanged.emit(self.index(row, 0), self.index(row, len(COLUMNS) - 1))

    def load(self, rules: list[dict]) -> None:
        """Replaces every rule (a profile's, new rules with new ids); RuleError when one is not a rule."""
        complete = [self._complete(item) for item in rules_from_dicts_checked(rules)]
        for rule in complete:
            rule["id"] = new_rule_id()
        self._replace(complete)

    def restore(self, rules) -> None:
        """Replaces every rule by the rules of an earlier run, ids kept, each as it was:
        one still being edited (not valid yet) comes back with its error shown.
        RuleError when an item is not a rule of a known kind at all."""
        if not isinstance(rules, list):
            raise RuleError(f"rules must be a list, not {type(rules).__name__}")
        restored, seen = [], set()
        for index, item in enumerate(rules):
            if not isinstance(item, dict) or item.get("kind") not in RULE_KINDS:
                raise RuleError("not a rule of a known kind", f"rule {index + 1}")
            params = RULE_KINDS[item["kind"]].params
            rule = {"enabled": False, "filter": "true", "direction": "both",
                    **{key: param.default for key, param in params.items()}, **item}
            if rule.get("id", "") in ("", *seen):
                rule["id"] = new_rule_id()
            seen.add(rule["id"])
            restored.append(rule)
        self._replace(restored)

    def _replace(self, complete: list[dict]) -> None:
        self.beginResetModel()
        self._rules = complete
        self._counters = [dict.fromkeys(COUNTERS, 0) for _ in complete]
        self._errors = [None] * len(complete)
        self.endResetModel()
        self._changed()

    def apply_stats(self, stats: dict) -> bool:
        """Counters from a "rows" event's stats; False when they count other rules than these."""
        captured = int(stats.get("packets") or 0)
        if captured != self.captured:
            self.captured = captured
            if self._rules:
                self.dataChanged.emit(self.index(0, MATCHED), self.index(len(self._rules) - 1, MATCHED))
        counted = stats.get("rules")
        if counted is None or stats.get("rules_version") != self.version or len(counted) != len(self._rules):
            return False
        if [c.get("kind") for c in counted] != [r["kind"] for r in self._rules]:
            return False
        if counted == self._counters:
            return True
        self._counters = [dict(c) for c in counted]
        if self._rules:
            self.dataChanged.emit(self.index(0, min(COUNTER_COLUMNS)),
                                  self.index(len(self._rules) - 1, max(COUNTER_COLUMNS)))
        return True

    # Qt model ---------------------------------------------------------------
    def rowCount(self, parent=QModelIndex()) -> int:
        return 0 if parent.isValid() else len(self._rules)

    def flags(self, index):
        base = Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable | Qt.ItemFlag.ItemIsDragEnabled
        if not index.isValid():
            return Qt.ItemFlag.ItemIsDropEnabled
        if index.column() == ENABLED:
            base |= Qt.ItemFlag.ItemIsUserCheckable
        return base

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid() or index.row() >= len(self._rules):
            return None
        row, column = index.row(), index.column()
        rule = self._rules[row]
        if role == Qt.ItemDataRole.CheckStateRole and column == ENABLED:
            return Qt.CheckState.Checked if rule["enabled"] else Qt.CheckState.Unchecked
        if role == Qt.ItemDataRole.DisplayRole:
            if column == NAME:
                return rule.get("name") or kind_title(rule["kind"])
            if column == DIRECTION:
                return rule["direction"]
            if column == FILTER:
                return rule["filter"]
            if column == PARAMETERS:
                return parameters_text(rule)
            if column in COUNTER_COLUMNS:
                count = self._counters[row].get(COUNTER_COLUMNS[column], 0)
                if column == MATCHED and count == 0 and rule["enabled"] and self.captured:
                    return f"0 of {self.captured:,} captured"
                return f"{count:,}"
            return None
        if role == Qt.ItemDataRole.ForegroundRole and row in self._unreachable:
            return UNREACHABLE_BRUSH
        if role == Qt.ItemDataRole.BackgroundRole and self._errors[row]:
            return ERROR_BRUSH
        if role == Qt.ItemDataRole.ForegroundRole and not rule["enabled"]:
            return DISABLED_BRUSH
        if role == Qt.ItemDataRole.ToolTipRole:
            return self._errors[row] or self.reach_problem(row) or parameters_text(rule)
        if role == Qt.ItemDataRole.TextAlignmentRole and column in COUNTER_COLUMNS:
            return int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
        return None

    def setData(self, index, value, role=Qt.ItemDataRole.EditRole) -> bool:
        if index.isValid() and index.column() == ENABLED and role == Qt.ItemDataRole.CheckStateRole:
            self.set_value(index.row(), "enabled", Qt.CheckState(value) == Qt.CheckState.Checked)
            return True
        return False

    # dragging rows to reorder them --------------------------------------------
    def supportedDropActions(self):
        return Qt.DropAction.MoveAction

    def mimeTypes(self) -> list[str]:
        return [ROW_MIME]

    def mimeData(self, indexes) -> QMimeData:
        data = QMimeData()
        rows = sorted({index.row() for index in indexes})
        data.setData(ROW_MIME, QByteArray(str(rows[0] if rows else -1).encode()))
        return data

    def dropMimeData(self, data, action, row, column, parent) -> bool:
        if not data.hasFormat(ROW_MIME):
            return False
        source = int(bytes(data.data(ROW_MIME)).decode() or -1)
        target = row if row >= 0 else (parent.row() if parent.isValid() else len(self._rules))
        if 0 <= source < len(self._rules):
            self.moveRows(QModelIndex(), source, 1, QModelIndex(), target)
        # The move is done: a True here would make the view remove the dragged row too.
        return False


def rules_from_dicts_checked(rules) -> list[dict]:
    """The rule dicts themselves, once the engine has accepted them all."""
    rules_from_dicts(rules)
    return list(rules)


__all__ = ["RulesModel", "COLUMNS", "COUNTER_COLUMNS", "DIRECTIONS", "kind_title", "new_rule_id",
           "parameters_text"]
