"""Network conditions and rewrite rules: Clumsy's one-window list, one row per rule.

Add a rule of any kind, reorder by dragging or with the arrows, tick it on,
and edit it below the list in a form made from the kind's parameters. The
rules go to the Session a moment after the last change, once every rule is
valid; the counters come back with the "rows" events.
"""

from __future__ import annotations

import json
from typing import Callable

from PySide6.QtCore import QSettings, QTimer, Qt
from PySide6.QtWidgets import (QAbstractItemView, QCheckBox, QComboBox, QDoubleSpinBox, QFormLayout, QGroupBox,
                               QHBoxLayout, QHeaderView, QInputDialog, QLabel, QLineEdit, QMenu, QSpinBox,
                               QTableView, QToolButton, QVBoxLayout, QWidget)

from divertgui.engine.rules import (DIRECTIONS, RuleError, delete_profile, list_presets, list_profiles,
                                    load_profile, save_profile)
from divertgui.models.rules_model import COLUMNS, RulesModel, kind_title
from divertgui.views.filter_editor import FilterEditor
from divertgui.views.wrapped_label import WrappedLabel

APPLY_DELAY_MS = 150
PERCENT_KEYS = ("chance", "enter_bad", "leave_bad", "loss_good", "loss_bad")
PRESET_PREFIX = "preset: "
# The rules of the last run, as JSON text (the same in every QSettings format), and their profile.
SETTINGS_RULES = "rules/current"
SETTINGS_PROFILE = "rules/profile"


def _suffix(key: str) -> str:
    if key in PERCENT_KEYS:
        return " %"
    if key.endswith("_ms"):
        return " ms"
    if key == "kbps":
        return " kbit/s"
    if key.endswith("_bytes"):
        return " B"
    return ""


def parameter_widget(key: str, param, value, commit: Callable[[object], None]) -> QWidget:
    """An input for one declared parameter, within its range, calling `commit(value)` on each change."""
    default = param.default
    if isinstance(default, bool):
        widget = QCheckBox()
        widget.setChecked(bool(value))
        widget.toggled.connect(commit)
    elif param.choices is not None:
        widget = QComboBox()
        widget.addItems([str(choice) for choice in param.choices])
        widget.setCurrentText(str(value))
        widget.currentTextChanged.connect(commit)
    elif isinstance(default, int):
        widget = QSpinBox()
        widget.setRange(int(param.low if param.low is not None else -2**31),
                        int(min(param.high if param.high is not None else 2**31 - 1, 2**31 - 1)))
        widget.setValue(int(value))
        widget.setSuffix(_suffix(key))
        widget.valueChanged.connect(commit)
    elif isinstance(default, float):
        widget = QDoubleSpinBox()
        # Clumsy sets chances with one decimal; times and rates read the same way.
        widget.setDecimals(1)
        widget.setRange(float(param.low if param.low is not None else -1e12),
                        float(param.high if param.high is not None else 1e12))
        widget.setValue(float(value))
        widget.setSuffix(_suffix(key))
        widget.valueChanged.connect(commit)
    elif isinstance(default, dict):
        widget = QLineEdit(json.dumps(value))
        widget.setPlaceholderText('{"ip.TTL": 5}')

        def commit_json() -> None:
            try:
                commit(json.loads(widget.text() or "{}"))
            except json.JSONDecodeError as exc:
                commit(f"not JSON: {exc}")

        widget.editingFinished.connect(commit_json)
    else:
        widget = QLineEdit(str(value))
        widget.textEdited.connect(commit)
    widget.setObjectName(f"param_{key}")
    low, high = param.low, param.high
    widget.setToolTip(f"{key}: default {default!r}" + (f", {low:g}..{high:g}" if low is not None else ""))
    return widget


class RuleEditor(QGroupBox):
    """The selected rule's settings; every change goes straight to the model."""

    def __init__(self, model: RulesModel, parent=None):
        super().__init__("Selected rule", parent)
        self.model = model
        self.row: int | None = None
        self.fields: dict[str, QWidget] = {}
        self.enabled = QCheckBox("Enabled", self)
        self.enabled.setObjectName("rule_enabled")
        self.enabled.toggled.connect(lambda on: self._commit("enabled", on))
        self.direction = QComboBox(self)
        self.direction.setObjectName("rule_direction")
        self.direction.addItems(DIRECTIONS)
        self.direction.currentTextChanged.connect(lambda text: self._commit("direction", text))
        self.filter = FilterEditor("rule", placeholder="true (every diverted packet)", parent=self)
        self.filter.apply_button.hide()
        self.filter.edit.textChanged.connect(self._filter_edited)
        common = QFormLayout()
        common.addRow(self.enabled)
        common.addRow("Direction", self.direction)
        common.addRow("Filter", self.filter)
        self.common = QWidget(self)
        self.common.setLayout(common)
        self.form = QFormLayout()
        self.form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.error = WrappedLabel("", self)
        self.error.setObjectName("rule_error")
        self.error.setStyleSheet("color: #a00000;")
        self.error.hide()
        layout = QVBoxLayout(self)
        layout.addWidget(self.common)
        layout.addLayout(self.form)
        layout.addWidget(self.error)
        layout.addStretch(1)
        self.show_rule(None)

    def show_rule(self, row: int | None) -> None:
        self.row = None
        while self.form.rowCount():
            self.form.removeRow(0)
        self.fields = {}
        if row is None or row >= self.model.rowCount():
            self.setTitle("Selected rule: none (add one or pick one above)")
            self.common.hide()
            self.error.hide()
            return
        rule = self.model.rule(row)
        self.setTitle(f"Selected rule: {row + 1}. {kind_title(rule['kind'])}")
        for widget in (self.enabled, self.direction, self.filter.edit):
            widget.blockSignals(True)
        self.enabled.setChecked(rule["enabled"])
        self.direction.setCurrentText(rule["direction"])
        self.filter.set_text("" if rule["filter"] == "true" else rule["filter"])
        for widget in (self.enabled, self.direction, self.filter.edit):
            widget.blockSignals(False)
        self.filter.validate()
        self.common.show()
        for key, param in self.model.params(rule["kind"]).items():
            widget = parameter_widget(key, param, rule[key], lambda value, k=key: self._commit(k, value))
            self.fields[key] = widget
            self.form.addRow(key.replace("_", " "), widget)
        self.row = row
        self._show_error(self.model.error(row))

    def refresh_enabled(self) -> None:
        if self.row is not None and self.row < self.model.rowCount():
            self.enabled.blockSignals(True)
            self.enabled.setChecked(self.model.rule(self.row)["enabled"])
            self.enabled.blockSignals(False)
            self._show_error(self.model.error(self.row))

    def _commit(self, key: str, value) -> None:
        if self.row is not None:
            self._show_error(self.model.set_value(self.row, key, value))

    def _filter_edited(self) -> None:
        # Kept even when invalid: the rule then stays red and unapplied until it is corrected.
        self._commit("filter", self.filter.text() or "true")

    def _show_error(self, message: str | None) -> None:
        self.error.setText(message or "")
        self.error.setVisible(bool(message))


class RulesPanel(QWidget):
    def __init__(self, model: RulesModel, post: Callable[..., None], parent=None):
        super().__init__(parent)
        self.model = model
        self.post = post
        self.applied_version: int | None = None
        self.profile_name = ""
        # What came back from the previous run, said until those rules are first changed.
        self.restored_note = ""
        self.restored_version: int | None = None

        self.add_button = QToolButton(self)
        self.add_button.setText("Add ▾")
        self.add_button.setObjectName("add_rule")
        self.add_button.setPopupMode(QToolButton.ToolButtonPopupMode.InstantPopup)
        menu = QMenu(self.add_button)
        for kind in model.kinds():
            menu.addAction(kind_title(kind), lambda k=kind: self.add_rule(k))
        self.add_button.setMenu(menu)
        self.remove_button = self._button("Remove", self.remove_rule, "remove_rule")
        self.up_button = self._button("▲", lambda: self.move_rule(-1), "rule_up")
        self.up_button.setToolTip("Move up: rules run in order, top first")
        self.down_button = self._button("▼", lambda: self.move_rule(1), "rule_down")
        self.profiles = QComboBox(self)
        self.profiles.setObjectName("profiles")
        self.profiles.setMinimumContentsLength(12)
        self.profiles.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.load_button = self._button("Load", self.load_selected_profile, "load_profile")
        self.save_button = self._button("Save…", self.save_dialog, "save_profile")
        self.delete_button = self._button("Delete", self.delete_selected_profile, "delete_profile")

        self.table = QTableView(self)
        self.table.setObjectName("rules_table")
        self.table.setModel(model)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setDragDropMode(QAbstractItemView.DragDropMode.DragDrop)
        self.table.setDefaultDropAction(Qt.DropAction.MoveAction)
        self.table.setDragDropOverwriteMode(False)
        self.table.setDropIndicatorShown(True)
        self.table.verticalHeader().hide()
        # Rows as compact as the other lists': a short side panel shows every rule of a preset.
        self.table.verticalHeader().setDefaultSectionSize(22)
        self.table.setWordWrap(False)
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(COLUMNS.index("Parameters"), QHeaderView.ResizeMode.Interactive)
        self.table.setColumnWidth(COLUMNS.index("Parameters"), 220)
        self.table.selectionModel().currentRowChanged.connect(lambda current, _: self.select(current.row()))
        self.editor = RuleEditor(model, self)
        self.status = WrappedLabel("", self)
        self.status.setObjectName("rules_status")

        tools = QHBoxLayout()
        for widget in (self.add_button, self.remove_button, self.up_button, self.down_button):
            tools.addWidget(widget)
        tools.addStretch(1)
        profile = QHBoxLayout()
        profile.addWidget(QLabel("Profile", self))
        profile.addWidget(self.profiles, 1)
        # The profile's buttons get a row of their own: beside the list of profiles they
        # would not fit the narrowest side panel.
        profile_tools = QHBoxLayout()
        for widget in (self.load_button, self.save_button, self.delete_button):
            profile_tools.addWidget(widget)
        profile_tools.addStretch(1)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addLayout(tools)
        layout.addLayout(profile)
        layout.addLayout(profile_tools)
        layout.addWidget(self.table, 2)
        layout.addWidget(self.editor, 3)
        layout.addWidget(self.status)

        self.apply_timer = QTimer(self)
        self.apply_timer.setSingleShot(True)
        self.apply_timer.setInterval(APPLY_DELAY_MS)
        self.apply_timer.timeout.connect(self.apply)
        model.rules_changed.connect(self.apply_timer.start)
        model.dataChanged.connect(lambda *_: self.editor.refresh_enabled())
        model.rowsMoved.connect(lambda *_: self._follow_moved())
        self.fill_profiles()
        self.restore_rules()
        # Connected after the restore, which must not write back what it is reading.
        model.rules_changed.connect(self.remember_rules)

    def _button(self, text: str, slot, name: str) -> QToolButton:
        button = QToolButton(self)
        button.setText(text)
        button.setObjectName(name)
        button.clicked.connect(slot)
        return button

    # the list ----------------------------------------------------------------
    def current_row(self) -> int | None:
        index = self.table.currentIndex()
        return index.row() if index.isValid() else None

    def select(self, row: int | None) -> None:
        if row is not None and 0 <= row < self.model.rowCount():
            if self.current_row() != row:
                self.table.selectRow(row)
            self.editor.show_rule(row)
        else:
            self.editor.show_rule(None)

    def add_rule(self, kind: str) -> int:
        row = self.model.add(kind)
        self.select(row)
        return row

    def remove_rule(self) -> None:
        row = self.current_row()
        if row is None:
            return
        self.model.remove(row)
        self.select(min(row, self.model.rowCount() - 1) if self.model.rowCount() else None)

    def move_rule(self, delta: int) -> None:
        row = self.current_row()
        if row is not None:
            self.select(self.model.move(row, delta))

    def _follow_moved(self) -> None:
        row = self.current_row()
        self.editor.show_rule(row)

    # talking to the session ---------------------------------------------------
    def apply(self) -> bool:
        """Sends the rules to the session; False (and why, in the status line) while one is invalid."""
        if not self.model.is_valid():
            bad = next(r for r in range(self.model.rowCount()) if self.model.error(r))
            self.status.setText(f"Not applied: rule {bad + 1}: {self.model.error(bad)}{self._restored()}")
            self.status.setStyleSheet("color: #a00000;")
            return False
        self.post("set_rules", rules=self.model.to_dicts(ids=True), version=self.model.version)
        self.applied_version = self.model.version
        enabled = sum(rule["enabled"] for rule in self.model.to_dicts())
        self.status.setText(f"Applied: {enabled} of {self.model.rowCount()} rules enabled{self._restored()}")
        self.status.setStyleSheet("")
        self._warn_unreachable()
        return True

    def _restored(self) -> str:
        return f". {self.restored_note}" if self.model.version == self.restored_version else ""

    def set_capture_filter(self, text: str, layer) -> None:
        """The capture filter now in use: a rule that cannot match what it takes is pointed out."""
        self.model.set_capture_filter(text, layer)
        if self.applied_version == self.model.version:
            self.apply()

    def _warn_unreachable(self) -> None:
        problems = [self.model.reach_problem(row) for row in self.model.unreachable()]
        if problems:
            self.status.setText(self.status.text() + ". Warning: " + "; ".join(problems)
                                + ": it will match 0 packets.")
            self.status.setStyleSheet("color: #b00020;")

    def on_stats(self, stats: dict) -> None:
        self.model.apply_stats(stats)

    def on_error(self, event: dict) -> None:
        """A "rules" error from the session: the rule it names turns red."""
        message = event.get("message", "")
        self.status.setText(f"Not applied: {message}")
        self.status.setStyleSheet("color: #a00000;")
        words = message.split(":", 1)[0].split()
        if len(words) == 2 and words[0] == "rule" and words[1].isdigit():
            row = int(words[1]) - 1
            if 0 <= row < self.model.rowCount():
                self.model.set_error(row, message)
                if row == self.editor.row:
                    self.editor.refresh_enabled()

    # profiles -----------------------------------------------------------------
    def fill_profiles(self) -> None:
        current = self.profiles.currentText()
        self.profiles.clear()
        self.profiles.addItems(list_profiles())
        self.profiles.addItems([PRESET_PREFIX + name for name in list_presets()])
        if current:
            self.profiles.setCurrentText(current)

    def load_profile(self, name: str) -> bool:
        """A saved profile or (with the "preset: " prefix) a shipped preset replaces the rules."""
        try:
            data = load_profile(name.removeprefix(PRESET_PREFIX))
            self.model.load(data["rules"])
        except RuleError as exc:
            self.status.setText(f"Profile {name}: {exc}")
            self.status.setStyleSheet("color: #a00000;")
            return False
        self.profile_name = name
        self.remember_rules()
        self._show_profile(name)
        self.profiles.setToolTip(data.get("description", ""))
        self.select(0 if self.model.rowCount() else None)
        self.status.setStyleSheet("")
        self.status.setText(f"Loaded {name}: {data.get('description', '')}")
        return True

    def _show_profile(self, name: str) -> None:
        """Puts the loaded profile in the combo box, however it was named to load_profile."""
        self.fill_profiles()
        saved = list_profiles()
        bare = name.removeprefix(PRESET_PREFIX)
        # The engine looks a bare name up among the saved profiles first, then the presets.
        shown = bare if not name.startswith(PRESET_PREFIX) and bare in saved else PRESET_PREFIX + bare
        if self.profiles.findText(shown) < 0:
            shown = name
            self.profiles.addItem(shown)
        self.profiles.setCurrentText(shown)

    def save_profile(self, name: str, description: str = "") -> bool:
        try:
            path = save_profile(name, self.model.to_dicts(), description)
        except (RuleError, OSError) as exc:
            self.status.setText(f"Profile {name} not saved: {exc}")
            self.status.setStyleSheet("color: #a00000;")
            return False
        self.fill_profiles()
        self.profiles.setCurrentText(name)
        self.profile_name = name
        self.remember_rules()
        self.status.setText(f"Saved {name} ({path})")
        return True

    def load_selected_profile(self) -> None:
        if self.profiles.currentText():
            self.load_profile(self.profiles.currentText())

    def save_dialog(self) -> None:
        current = self.profiles.currentText()
        name, ok = QInputDialog.getText(self, "Save rules as profile", "Profile name:",
                                        text="" if current.startswith(PRESET_PREFIX) else current)
        if ok and name.strip():
            self.save_profile(name.strip())

    def delete_selected_profile(self) -> None:
        name = self.profiles.currentText()
        if not name or name.startswith(PRESET_PREFIX):
            self.status.setText("Presets cannot be deleted; save a copy under another name instead")
            return
        try:
            delete_profile(name)
        except RuleError as exc:
            self.status.setText(str(exc))
            return
        self.fill_profiles()

    # the rules of the previous run ------------------------------------------------
    def remember_rules(self) -> None:
        """Keeps the rules, as they are, and their profile for the next start of the app."""
        settings = QSettings()
        settings.setValue(SETTINGS_RULES, json.dumps(self.model.to_dicts(ids=True)))
        settings.setValue(SETTINGS_PROFILE, self.profile_name)

    def restore_rules(self) -> bool:
        """The rules of the previous run with their parameters, every one switched off: as in
        Clumsy, a new start applies no condition the user has not switched on since. False
        when there were none or they could not be read (the status line says why)."""
        settings = QSettings()
        text = settings.value(SETTINGS_RULES, "")
        if not text:
            return False
        try:
            self.model.restore(switched_off(json.loads(str(text))))
        except (ValueError, RuleError) as exc:
            where = settings.fileName()
            self.status.setText(f"The rules of the previous run were not restored ({SETTINGS_RULES} in {where}): "
                                f"{exc}")
            self.status.setStyleSheet("color: #a00000;")
            return False
        self.profile_name = str(settings.value(SETTINGS_PROFILE, "") or "")
        if self.profile_name:
            self._show_profile(self.profile_name)
        self.restored_version = self.model.version
        self.restored_note = (f"Restored {self.model.rowCount()} rules from the previous run"
                              + (f" (profile {self.profile_name})" if self.profile_name else "")
                              + ", all switched off: tick On to apply one")
        self.status.setText(self.restored_note)
        return True


def switched_off(rules):
    """The saved rules, each off; what is not a rule is left for the model to refuse."""
    if not isinstance(rules, list):
        return rules
    return [dict(rule, enabled=False) if isinstance(rule, dict) else rule for rule in rules]
