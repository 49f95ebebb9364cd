"""A run config read from YAML (or a dict), overrides applied, validated: every error names the field's
dotted path and, for choices, the allowed values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from mtst.config.run import RunConfig
from mtst.errors import ConfigError


def _format_error(err: dict[str, Any]) -> str:
    path = ".".join(str(p) for p in err["loc"]) or "config"
    if err["type"] == "extra_forbidden":
        return f"{path}: unknown key"
    msg = err["msg"].removeprefix("Value error, ")
    if "input" in err and err["type"] not in ("missing", "value_error"):
        msg += f" (got {err['input']!r})"
    return f"{path}: {msg}"


def _allowed_keys(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str] | None:
    """Walk the schema down ``loc`` (minus the unknown key) to list the keys allowed there."""
    current: Any = model
    skip_key = False
    for part in loc[:-1]:
        if skip_key or isinstance(part, int):  # a dict key such as a task name
            skip_key = False
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return None
        skip_key = getattr(field.annotation, "__origin__", None) is dict
        current = _unwrap(field.annotation)
        if current is None:
            return None
    fields = getattr(current, "model_fields", None)
    return sorted(fields) if fields else None


def _unwrap(annotation: Any) -> Any:
    for arg in (annotation, *getattr(annotation, "__args__", ())):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None


def validate_config(raw: dict[str, Any], source: str = "config") -> RunConfig:
    """Validate a raw dict; raise ConfigError listing every problem by path."""
    try:
        return RunConfig.model_validate(raw)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            line = _format_error(err)
            if err["type"] == "extra_forbidden":
                allowed = _allowed_keys(RunConfig, tuple(err["loc"]))
                if allowed:
                    line += f"; allowed: {', '.join(allowed)}"
            lines.append(line)
        raise ConfigError(f"invalid configuration in {source}:\n  " + "\n  ".join(lines)) from None


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (value parsed as YAML) to a raw config dict."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. training.strategy=heads")
        key, _, value = item.partition("=")
        parts = [p for p in key.strip().split(".") if p]
        if not parts:
            raise ConfigError(f"--set {item!r}: empty key")
        node = raw
        for part in parts[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {item!r}: {part} is not a section")
            node = child
        try:
            node[parts[-1]] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError as exc:
            raise ConfigError(f"--set {item!r}: value is not valid YAML ({exc})") from None
    return raw


def load_config(path: str | Path | None, overrides: list[str] | None = None) -> RunConfig:
    """Read YAML (or the bundled demo config when ``path`` is None), apply overrides, validate."""
    from mtst.demo import demo_config_path

    cfg_path = Path(path) if path is not None else demo_config_path()
    try:
        text = cfg_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{cfg_path}: no such config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{cfg_path}: cannot read ({exc})") from None
    try:
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{cfg_path}: not valid YAML ({exc})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{cfg_path}: expected a mapping of sections (model, tasks, data, training)")
    tasks = raw.get("tasks")
    if tasks is not None and not isinstance(tasks, dict):
        names = [t for t in tasks if isinstance(t, str)] if isinstance(tasks, list) else []
        example = ", ".join(f"{n}: {{}}" for n in names[:3]) or "category: {}, sentiment: {}"
        raise ConfigError(
            f"{cfg_path}: tasks: expected a mapping of task name to its settings, not a "
            f"{type(tasks).__name__}; write it as  tasks: {{{example}}}  (an empty mapping takes the defaults)"
        )
    raw = _resolve_paths(raw, cfg_path.parent)
    raw = apply_overrides(raw, overrides or [])
    return validate_config(raw, str(cfg_path))


def _resolve_paths(raw: dict[str, Any], base: Path) -> dict[str, Any]:
    """Data paths in a config file are relative to that file, not to the working directory."""

    def fix(section: Any, keys: tuple[str, ...] = ("train", "validation", "test", "sts")) -> None:
        if isinstance(section, dict):
            for split in keys:
                value = section.get(split)
                if not isinstance(value, str) or Path(value).expanduser().is_absolute():
                    continue
                # relative to the config file; a path that exists only from the working directory keeps working
                if (base / value).exists() or not Path(value).exists():
                    section[split] = str(base / value)

    fix(raw.get("data"))
    training = raw.get("training")
    fix(training.get("keep") if isinstance(training, dict) else None, ("texts",))
    tasks = raw.get("tasks")
    for task in tasks.values() if isinstance(tasks, dict) else ():
        if isinstance(task, dict):
            fix(task.get("data"))
    return raw


def dump_config(config: RunConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
