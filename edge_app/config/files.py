"""The config file and the files settings point at: where config.yaml is looked for (`locate`),
reading it with a size, nesting and duplicate-key guard (`load`, then `edge_app.config.from_dict`),
a secret read from a file or a systemd credential (`read_secret`), and the model file that must
exist. Each problem is a ConfigError naming the file or the key."""

from __future__ import annotations

import os
import typing
from pathlib import Path

import yaml

from edge_app import resources
from edge_app.config import Config, ConfigError, from_dict

# Where an installed till keeps its config (the Debian package's conffile), and the variable that
# points elsewhere; `locate` tries them in order after --config.
SYSTEM_CONFIG = Path("/etc/agecheck/config.yaml")
CONFIG_ENV = "AGECHECK_CONFIG"
# config.yaml is a few kilobytes; nesting beyond this is never a setting (the deepest is 4).
MAX_FILE_BYTES = 1024 * 1024
MAX_NESTING = 32


class _DepthLimitedLoader(yaml.SafeLoader):
    """yaml.safe_load with a nesting limit: PyYAML composes nested nodes recursively, so a file
    nested 5,000 deep used to end in a RecursionError and a 3,000-line traceback."""

    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        self._depth += 1
        try:
            if self._depth > MAX_NESTING:
                mark = self.peek_event().start_mark
                raise ConfigError(
                    f"nested more than {MAX_NESTING} levels deep at line {mark.line + 1}; "
                    "no setting is nested like that"
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[typing.Hashable, typing.Any]:
        # YAML itself lets the last of two equal keys win without a word: a setting changed in
        # one place and left in another would silently be the other's value.
        seen: dict[object, int] = {}
        for key_node, _ in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            if key is None:
                continue
            if key in seen:
                raise ConfigError(
                    f"setting {key!r} is given twice, at lines {seen[key]} and {key_node.start_mark.line + 1}; keep one"
                )
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep)


def locate(
    explicit: str | Path | None,
    allow_defaults: bool,
    environ: typing.Mapping[str, str] | None = None,
    system: Path | None = None,
) -> Path | None:
    """The config file to use: --config, then $AGECHECK_CONFIG, then /etc/agecheck/config.yaml.
    None (the built-in defaults) only when the caller says defaults are safe for its job;
    otherwise a ConfigError that lists every place looked at."""
    environ = os.environ if environ is None else environ
    system = SYSTEM_CONFIG if system is None else system
    if explicit is not None:
        return Path(explicit)  # load() names it when it is missing
    from_env = environ.get(CONFIG_ENV, "").strip()
    if from_env:
        p = Path(from_env)
        if not p.is_file():
            raise ConfigError(
                f"config: ${CONFIG_ENV} points at {str(p)!r}, which is not a file; "
                f"fix the variable or pass --config PATH"
            )
        return p
    if system.is_file():
        return system
    if allow_defaults:
        return None
    raise ConfigError(
        f"config: no config file found (looked at --config: not given; ${CONFIG_ENV}: not set; "
        f"{system}: does not exist); this command needs one: pass --config PATH, set ${CONFIG_ENV}, "
        f"or install the example ({resources.EXAMPLE_CONFIG.packaged} in the package) as {system}"
    )


def load(path: str | Path | None) -> Config:
    """Read and validate config.yaml. None means the built-in defaults (relative paths then
    resolve against the working directory)."""
    if path is None:
        return from_dict({}, Path.cwd())
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"config: file {str(p)!r} does not exist; pass --config PATH to an existing file")
    if not p.is_file():
        raise ConfigError(f"config: {str(p)!r} is not a file")
    try:
        size = p.stat().st_size
    except OSError as exc:
        raise ConfigError(f"config: cannot read {p} ({exc.strerror})") from None
    if size > MAX_FILE_BYTES:
        raise ConfigError(f"config: {p} is {size} bytes; a config file is at most {MAX_FILE_BYTES} bytes")
    try:
        data = yaml.load(p.read_text(encoding="utf-8"), Loader=_DepthLimitedLoader)
    except ConfigError as exc:
        raise ConfigError(f"config: {p}: {exc}") from None
    except RecursionError:
        raise ConfigError(f"config: {p} is nested too deeply to read") from None
    except OSError as exc:
        raise ConfigError(f"config: cannot read {p} ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"config: {p} is not valid YAML{where}; fix the syntax there") from None
    except UnicodeDecodeError:
        raise ConfigError(f"config: {p} is not a UTF-8 text file") from None
    except ValueError as exc:  # e.g. an integer of thousands of digits (int() refuses it)
        raise ConfigError(f"config: {p} holds a value that cannot be read ({str(exc)[:120]})") from None
    if data is None:
        # An empty file (or one of comments only) is most likely a failed copy or a truncated
        # write: running on every default would point the till at the wrong broker, silently.
        raise ConfigError(
            f"config: {p} is empty (no settings, only blanks or comments); copy the shipped config.yaml and edit it"
        )
    return from_dict(data, p.resolve().parent)


def read_secret(file: str | None, credential: str | None, key: str) -> str | None:
    """A secret from a file, or from the systemd credential of that name
    ($CREDENTIALS_DIRECTORY/<name>); None when neither is set. `key` is the settings' prefix
    (e.g. "mqtt.password") that error messages name."""
    if file:
        try:
            return Path(file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{key}_file: cannot read {file!r} ({exc.strerror})") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{key}_file: {file!r} is not UTF-8 text") from None
    if credential:
        cred_dir = os.environ.get("CREDENTIALS_DIRECTORY")
        if not cred_dir:
            raise ConfigError(
                f"{key}_credential: $CREDENTIALS_DIRECTORY is not set "
                f"(run under systemd with LoadCredential=, or use {key}_file)"
            )
        try:
            return (Path(cred_dir) / credential).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{key}_credential: cannot read credential {credential!r} ({exc.strerror})") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{key}_credential: credential {credential!r} is not UTF-8 text") from None
    return None


def require_model_file(cfg: Config) -> Path:
    """The model path must exist before anything tries to load it."""
    p = Path(cfg.model.path)
    if not p.is_file():
        raise ConfigError(f"model.path: file {str(p)!r} does not exist; point it at a .tflite model")
    return p
