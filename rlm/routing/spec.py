"""The models file: model groups, their deployments, and the routing rules (TOML).

``$RLM_HOME/models.toml`` or ``--models FILE``. The smallest useful file::

    [groups.root]
    deployments = [{ model = "openai/small", api_base = "http://127.0.0.1:8001/v1", context_window = 8192 }]
    [groups.heavy]
    deployments = [
      { model = "openai/big", api_base = "http://gpu-node:8000/v1", context_window = 131072, order = 1 },
      { model = "openai/gpt-4.1-mini", context_window = 1047576, order = 2 },
    ]

Tables and keys (anything else is an error naming the file and the key):

``[groups.NAME]``
    ``deployments`` (list, required), ``description`` (one line the model is shown
    next to the group's name in its system prompt).
a deployment
    ``model`` (a litellm model string; required unless ``serve``), ``serve`` (the name
    of a ``[serve.NAME]`` deployment that ``rlm models serve`` starts on the Ray
    cluster: its model, endpoint, window and tokenizer come from there), ``api_base``,
    ``api_key_env`` (the environment variable holding its key; keys never go in the
    file), ``name`` (a label, unique in the file; default ``model@host:port``),
    ``context_window`` and ``max_output_tokens`` (tokens), ``input_cost_per_token`` and
    ``output_cost_per_token`` (USD), ``order`` (priority in the group, 1 first),
    ``tags``, ``max_in_flight`` (calls this process keeps in flight on it before it
    counts as busy), ``tokenizer`` (``o200k_base``, ``cl100k_base``, ``bytes`` or
    ``gguf:PATH``; see :mod:`rlm.routing.tokens`), ``node`` (where it runs, for display),
    ``profile`` (a model profile by name, instead of the one its model string matches; see
    :mod:`rlm.profiles`), ``grammar`` (true/false: llama.cpp's reply grammar on the agents'
    own turns) and ``stop`` (up to 4 stop sequences for them), overriding the profile's.
``[routing]``
    ``root``, ``children``, ``llm_query``: the group of the root agent's own calls, of
    child agents' own calls, and of sub-calls (defaults ``root``, ``sub``, ``sub``; a
    missing ``sub`` group means ``root``); ``depth``: a table ``{ "2" = "cheap" }`` of
    groups for agents' own calls at a depth.
``[routing.heavy]``
    ``group`` (default ``heavy``), ``prompt_tokens`` (a sub-call whose prompt is over this
    many tokens is heavy), ``batch_size`` (every call of an ``llm_query_batched`` of more
    prompts is heavy), ``depth`` (calls of agents at this depth or deeper are heavy).
``[serve.NAME]`` and ``[serve]``
    deployments started on the cluster (see :mod:`rlm.routing.served` and :mod:`rlm.agents.serving`).

:func:`load_models` returns a :class:`ModelsSpec` (the groups and rules, all frozen and
hashable so they travel inside :class:`~rlm.config.RLMConfig`) and the ``[serve]``
part as plain data for :mod:`rlm.agents.serving`.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlm.errors import ConfigError

__all__ = ["Deployment", "Group", "HeavyRules", "Routing", "ModelsSpec", "ServeOptions", "load_models",
           "parse_models", "models_file", "MODELS_FILE", "DEFAULT_SERVE_PORT"]

#: The models file read from RLM_HOME when no ``--models`` is given.
MODELS_FILE = "models.toml"
#: Where Ray Serve's HTTP proxy listens unless ``[serve] port`` says otherwise.
DEFAULT_SERVE_PORT = 8000
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")


@dataclass(frozen=True, slots=True)
class Deployment:
    """One place a group's calls can go: a litellm model string and how to reach it."""

    model: str
    api_base: str | None = None
    name: str = ""
    context_window: int | None = None
    max_output_tokens: int | None = None
    input_cost_per_token: float | None = None
    output_cost_per_token: float | None = None
    order: int = 1
    tags: tuple[str, ...] = ()
    max_in_flight: int | None = None
    tokenizer: str | None = None
    node: str | None = None
    api_key_env: str | None = None
    #: The model profile (rlm.profiles) by name, instead of the one matched by ``model``.
    profile: str | None = None
    #: Overrides of the profile's llama.cpp reply grammar and stop sequences (``None``: the profile's).
    grammar: bool | None = None
    stop: tuple[str, ...] | None = None
    #: Only for deployments made from ``--model``/``--api-base`` at run time; never read from a file or stored.
    api_key: str | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able, without the key."""
        data = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "api_key"}
        data["tags"] = list(self.tags)
        data["stop"] = None if self.stop is None else list(self.stop)
        return data


@dataclass(frozen=True, slots=True)
class Group:
    """A named set of deployments that serve the same kind of call."""

    name: str
    deployments: tuple[Deployment, ...]
    description: str = ""


@dataclass(frozen=True, slots=True)
class HeavyRules:
    """When a call counts as heavy and goes to ``group`` (``None``: that rule is off)."""

    group: str = "heavy"
    prompt_tokens: int | None = None
    batch_size: int | None = None
    depth: int | None = None

    @property
    def active(self) -> bool:
        return any(v is not None for v in (self.prompt_tokens, self.batch_size, self.depth))


@dataclass(frozen=True, slots=True)
class Routing:
    """Which group each kind of call uses by default, and the heavy rules."""

    root: str = "root"
    children: str = "sub"
    llm_query: str = "sub"
    depth: tuple[tuple[int, str], ...] = ()
    heavy: HeavyRules = HeavyRules()


@dataclass(frozen=True, slots=True)
class ModelsSpec:
    """The groups and routing rules of a models file (``source``: the file's path)."""

    groups: tuple[Group, ...] = ()
    routing: Routing = Routing()
    source: str = ""

    def group(self, name: str) -> Group | None:
        return next((g for g in self.groups if g.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (keys never included); :meth:`from_dict` reads it back."""
        return {"source": self.source,
                "groups": [{"name": g.name, "description": g.description,
                            "deployments": [d.to_dict() for d in g.deployments]} for g in self.groups],
                "routing": {**{k: getattr(self.routing, k) for k in ("root", "children", "llm_query")},
                            "depth": [list(pair) for pair in self.routing.depth],
                            "heavy": dataclasses.asdict(self.routing.heavy)}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelsSpec:
        """The inverse of :meth:`to_dict`."""
        try:
            groups = tuple(Group(g["name"], tuple(_deployment_from_dict(d) for d in g["deployments"]),
                                 g.get("description", "")) for g in data.get("groups", ()))
            routing = data.get("routing") or {}
            return cls(groups, Routing(
                root=routing.get("root", "root"), children=routing.get("children", "sub"),
                llm_query=routing.get("llm_query", "sub"),
                depth=tuple((int(d), str(g)) for d, g in routing.get("depth", ())),
                heavy=HeavyRules(**(routing.get("heavy") or {}))), str(data.get("source", "")))
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"invalid models spec: {exc}") from None


def _deployment_from_dict(data: Mapping[str, Any]) -> Deployment:
    values = dict(data)
    values["tags"] = tuple(values.get("tags") or ())
    if values.get("stop") is not None:
        values["stop"] = tuple(values["stop"])
    values.pop("api_key", None)
    return Deployment(**values)


@dataclass(frozen=True)
class ServeOptions:
    """The ``[serve]`` part of a models file: where Serve's HTTP proxy listens, and each ``[serve.NAME]``."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_SERVE_PORT
    deployments: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    def api_base(self, name: str) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        return f"http://{host}:{self.port}/{name}/v1"


# ----------------------------------------------------------------------------- parsing

_DEPLOYMENT_KEYS = {"model": str, "serve": str, "api_base": str, "api_key_env": str, "name": str,
                    "context_window": int, "max_output_tokens": int, "input_cost_per_token": float,
                    "output_cost_per_token": float, "order": int, "tags": list, "max_in_flight": int,
                    "tokenizer": str, "node": str, "profile": str, "grammar": bool, "stop": list}
_HEAVY_KEYS = {"group": str, "prompt_tokens": int, "batch_size": int, "depth": int}


def load_models(path: Path) -> tuple[ModelsSpec, ServeOptions]:
    """Read and check a models file (see the module docstring)."""
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"models file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"models file {path}: {exc}") from None
    return parse_models(data, source=str(path))


def models_file(option: str | Path | None, home: Path) -> Path | None:
    """The models file to use: ``--models FILE``, else ``$RLM_HOME/models.toml`` if it exists, else ``None``."""
    if option:
        return Path(option).expanduser()
    default = home / MODELS_FILE
    return default if default.is_file() else None


def parse_models(data: Mapping[str, Any], source: str = "<models>") -> tuple[ModelsSpec, ServeOptions]:
    """A :class:`ModelsSpec` and the ``[serve]`` options from a parsed models file."""
    where = _Where(source)
    where.keys(data, {"groups", "routing", "serve"}, "")
    serve = _serve_options(data.get("serve") or {}, where)
    groups = tuple(_group(name, body, serve, where) for name, body in _table(data.get("groups"), "groups", where))
    routing = _routing(data.get("routing") or {}, where)
    spec = ModelsSpec(groups, routing, source)
    _check_names(spec, where)
    return spec, serve


@dataclass(frozen=True)
class _Where:
    source: str

    def fail(self, path: str, message: str) -> ConfigError:
        return ConfigError(f"models file {self.source}: {path + ': ' if path else ''}{message}")

    def keys(self, table: Mapping[str, Any], allowed: set[str], path: str) -> None:
        unknown = sorted(set(table) - allowed)
        if unknown:
            raise self.fail(path, f"unknown key(s) {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})")


def _table(value: Any, path: str, where: _Where) -> list[tuple[str, Mapping[str, Any]]]:
    if value is None:
        return []
    if not isinstance(value, Mapping):
        raise where.fail(path, "must be a table")
    for name, body in value.items():
        if not _NAME.match(name):
            raise where.fail(f"{path}.{name}", "a name starts with a letter and has letters, digits, _ . - only")
        if not isinstance(body, Mapping):
            raise where.fail(f"{path}.{name}", "must be a table")
    return list(value.items())


def _typed(value: Any, kind: type, path: str, where: _Where) -> Any:
    if kind is bool:
        if not isinstance(value, bool):
            raise where.fail(path, "must be true or false")
        return value
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, kind) or isinstance(value, bool):
        wanted = "a number" if kind is float else "an integer" if kind is int else kind.__name__
        raise where.fail(path, f"must be {wanted}")
    if isinstance(value, (int, float)) and value < 0:
        raise where.fail(path, "must not be negative")
    return value


def _group(name: str, body: Mapping[str, Any], serve: ServeOptions, where: _Where) -> Group:
    path = f"groups.{name}"
    where.keys(body, {"deployments", "description"}, path)
    items = body.get("deployments")
    if not isinstance(items, list) or not items:
        raise where.fail(f"{path}.deployments", "must be a non-empty list of tables")
    deployments = tuple(_deployment(item, serve, where, f"{path}.deployments[{i}]") for i, item in enumerate(items))
    return Group(name, deployments, str(_typed(body.get("description", ""), str, f"{path}.description", where)))


def _deployment(item: Any, serve: ServeOptions, where: _Where, path: str) -> Deployment:
    if not isinstance(item, Mapping):
        raise where.fail(path, "must be a table like { model = \"openai/...\", api_base = \"...\" }")
    if "api_key" in item:
        raise where.fail(f"{path}.api_key", "keys never go in the models file: name the environment variable "
                                            "that holds it with api_key_env")
    where.keys(item, set(_DEPLOYMENT_KEYS), path)
    values = {key: _typed(value, _DEPLOYMENT_KEYS[key], f"{path}.{key}", where) for key, value in item.items()}
    values["tags"] = tuple(str(t) for t in values.get("tags", ()))
    _check_profile(values, where, path)
    if "serve" in values:
        values = {**_served(values.pop("serve"), serve, where, path), **values}
    if not values.get("model"):
        raise where.fail(path, "needs a model (a litellm model string) or serve (a [serve.NAME] deployment)")
    if values.get("context_window") == 0 or values.get("order") == 0 or values.get("max_in_flight") == 0:
        raise where.fail(path, "context_window, order and max_in_flight must be >= 1")
    _check_tokenizer(values.get("tokenizer"), where, path)
    return Deployment(**values)


def _served(name: str, serve: ServeOptions, where: _Where, path: str) -> dict[str, Any]:
    """The deployment fields of ``[serve.NAME]``: its endpoint on the Serve proxy, window, tokenizer."""
    spec = serve.deployments.get(name)
    if spec is None:
        raise where.fail(f"{path}.serve", f"no [serve.{name}] deployment in the file")
    from rlm.routing.served import served_fields

    return served_fields(name, spec, serve.api_base(name))


def _check_profile(values: dict[str, Any], where: _Where, path: str) -> None:
    """``profile`` names a profile; ``stop`` is a list of at most 4 non-empty strings (OpenAI's limit)."""
    from rlm.profiles import profile_named

    if "profile" in values:
        try:
            profile_named(values["profile"])
        except ConfigError as exc:
            raise where.fail(f"{path}.profile", str(exc)) from None
    if "stop" in values:
        stop = values["stop"]
        if len(stop) > 4 or not all(isinstance(s, str) and s for s in stop):
            raise where.fail(f"{path}.stop", "must be a list of at most 4 non-empty strings")
        values["stop"] = tuple(stop)


def _check_tokenizer(name: str | None, where: _Where, path: str) -> None:
    from rlm.routing.tokens import check_tokenizer_name

    if name is not None:
        problem = check_tokenizer_name(name)
        if problem:
            raise where.fail(f"{path}.tokenizer", problem)


def _routing(body: Any, where: _Where) -> Routing:
    if not isinstance(body, Mapping):
        raise where.fail("routing", "must be a table")
    where.keys(body, {"root", "children", "llm_query", "depth", "heavy"}, "routing")
    roles = {key: _typed(body[key], str, f"routing.{key}", where) for key in ("root", "children", "llm_query")
             if key in body}
    depth_table = body.get("depth") or {}
    if not isinstance(depth_table, Mapping):
        raise where.fail("routing.depth", 'must be a table like { "2" = "cheap" }')
    depth = []
    for key, group in depth_table.items():
        if not str(key).isdigit():
            raise where.fail(f"routing.depth.{key}", "keys are depths (0, 1, 2...)")
        depth.append((int(key), _typed(group, str, f"routing.depth.{key}", where)))
    heavy_body = body.get("heavy") or {}
    if not isinstance(heavy_body, Mapping):
        raise where.fail("routing.heavy", "must be a table")
    where.keys(heavy_body, set(_HEAVY_KEYS), "routing.heavy")
    heavy = HeavyRules(**{k: _typed(v, _HEAVY_KEYS[k], f"routing.heavy.{k}", where) for k, v in heavy_body.items()})
    return Routing(**roles, depth=tuple(sorted(depth)), heavy=heavy)


def _serve_options(body: Any, where: _Where) -> ServeOptions:
    if not isinstance(body, Mapping):
        raise where.fail("serve", "must be a table")
    host = _typed(body.get("host", "127.0.0.1"), str, "serve.host", where)
    port = _typed(body.get("port", DEFAULT_SERVE_PORT), int, "serve.port", where)
    deployments = {name: spec for name, spec in body.items() if name not in ("host", "port")}
    _table(deployments, "serve", where)
    return ServeOptions(host, port, deployments)


def _check_names(spec: ModelsSpec, where: _Where) -> None:
    """Group references must name groups; deployment labels must be unique."""
    names = {g.name for g in spec.groups}
    routing = spec.routing
    references = [("routing.root", routing.root), ("routing.children", routing.children),
                  ("routing.llm_query", routing.llm_query)]
    references += [(f"routing.depth.{d}", g) for d, g in routing.depth]
    if routing.heavy.active:
        references.append(("routing.heavy.group", routing.heavy.group))
    for path, target in references:
        if target not in names and target not in ("root", "sub"):
            raise where.fail(path, f"no group named {target!r} (groups: {', '.join(sorted(names)) or 'none'})")
    seen: dict[str, tuple[str, str | None]] = {}
    for group in spec.groups:
        for d in group.deployments:
            where_to = seen.setdefault(d.name, (d.model, d.api_base)) if d.name else None
            if where_to is not None and where_to != (d.model, d.api_base):
                raise where.fail(f"groups.{group.name}", f"deployment name {d.name!r} names two different deployments")
