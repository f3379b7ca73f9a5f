"""Named rule profiles in the user's config directory, and the presets shipped in resources/profiles.

A profile file is JSON: {"name": str, "description": str, "filter": str (optional,
the diversion filter it was made for), "rules": [rule dict, ...]}.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from divertgui.engine.rules.base import RuleError
from divertgui.engine.rules.registry import rules_from_dicts, rules_to_dicts

PRESETS_DIR = Path(__file__).resolve().parents[3] / "resources" / "profiles"
_SAFE_NAME = re.compile(r"^[\w][\w .+-]{0,99}$")


def profiles_dir() -> Path:
    """$XDG_CONFIG_HOME/divertgui/profiles (~/.config when XDG_CONFIG_HOME is unset)."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "divertgui" / "profiles"


def _path_of(name: str, directory: Path) -> Path:
    if not _SAFE_NAME.match(name):
        raise RuleError(f"profile name {name!r}: use letters, digits, spaces, '.', '+', '-' or '_' "
                        f"(at most 100, not starting with a dot)", "profile")
    return directory / f"{name}.json"


def save_profile(name: str, rules, description: str = "", filter: str | None = None,
                 directory: Path | None = None) -> Path:
    """Write the rules (Rule objects or dicts) as profile `name`; returns the file written."""
    directory = Path(directory) if directory is not None else profiles_dir()
    items = [r if isinstance(r, dict) else r.to_dict() for r in rules]
    rules_from_dicts(items)   # refuse to save what could not be loaded
    data = {"name": name, "description": description, "rules": items}
    if filter is not None:
        data["filter"] = filter
    path = _path_of(name, directory)
    directory.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    temporary.replace(path)
    return path


def read_profile_file(path) -> dict:
    """A profile file's contents with its rules checked; RuleError says which file and what is wrong."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise RuleError(f"cannot read {path}: {exc.strerror}", "profile") from exc
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RuleError(f"{path} is not valid JSON: {exc}", "profile") from exc
    if isinstance(data, list):
        data = {"name": path.stem, "rules": data}
    if not isinstance(data, dict) or not isinstance(data.get("rules"), list):
        raise RuleError(f"{path}: expected an object with a 'rules' list", "profile")
    try:
        rules_from_dicts(data["rules"])
    except RuleError as exc:
        raise RuleError(f"{path}: {exc}", "profile", exc.position) from exc
    data.setdefault("name", path.stem)
    return data


def load_profile(name_or_path, directory: Path | None = None) -> dict:
    """A saved profile by name, a preset by name, or any profile file by path."""
    text = str(name_or_path)
    candidate = Path(text)
    if text.endswith(".json") or os.sep in text:
        return read_profile_file(candidate)
    directory = Path(directory) if directory is not None else profiles_dir()
    for folder in (directory, PRESETS_DIR):
        path = _path_of(text, folder)
        if path.is_file():
            return read_profile_file(path)
    raise RuleError(f"no profile named {text!r} in {directory} or among the presets "
                    f"({', '.join(list_presets()) or 'none'})", "profile")


def delete_profile(name: str, directory: Path | None = None) -> None:
    directory = Path(directory) if directory is not None else profiles_dir()
    path = _path_of(name, directory)
    try:
        path.unlink()
    except FileNotFoundError as exc:
        raise RuleError(f"no profile named {name!r} in {directory}", "profile") from exc


def list_profiles(directory: Path | None = None) -> list[str]:
    directory = Path(directory) if directory is not None else profiles_dir()
    return sorted(p.stem for p in directory.glob("*.json")) if directory.is_dir() else []


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.json")) if PRESETS_DIR.is_dir() else []


__all__ = ["profiles_dir", "save_profile", "load_profile", "read_profile_file", "delete_profile",
           "list_profiles", "list_presets", "rules_to_dicts", "PRESETS_DIR"]
