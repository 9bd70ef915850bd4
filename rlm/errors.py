"""The one exception tree of rlm.

Model mistakes (syntax errors, exceptions in cells, a reply without code) are
*not* exceptions: they go back to the model as observations. What is raised is
an infrastructure fault or bad input from the user::

    RLMError                      root of everything rlm raises
    ├── ConfigError               an invalid option or environment value
    ├── InputError                the context path is missing, empty, unreadable...
    ├── LMError                   the model endpoint failed after retries
    │   ├── TransportError        an OpenAI-compatible server refused or dropped a call (rlm.transport)
    │   ├── UnknownGroup          the model asked for a model group that does not exist (rlm.routing)
    │   └── ContextTooLarge       the prompt fits no deployment's window; nothing was sent (rlm.routing)
    ├── HostCallError             a host function failed in a way the model should see
    ├── SandboxError              the REPL worker could not be started or talked to
    │   └── SandboxUnavailable    no isolation available here (bubblewrap missing...)
    │       └── UnsupportedArch   no seccomp syscall table for this CPU (rlm.sandbox.seccomp)
    ├── LocalModelError           the embedded llama.cpp server could not start
    ├── RunLogError               the DuckDB run log cannot be opened or migrated
    ├── LimitReached              a tree-wide budget limit ended the run
    ├── ReplayDiverged            a replay asked for a call its records do not hold (rlm.records)
    ├── MemoryStoreError          swarm memory (rlm.memory.records)
    │   ├── InvalidMemoryRequest  a bad request (also an InputError)
    │   ├── EntryNotFound         no such entry (also an InputError)
    │   └── MemoryConflict        an edit raced another one
    ├── FTSUnavailable            DuckDB's full-text-search extension cannot load (rlm.memory.fts)
    ├── ServiceError              the resident service refused a request (rlm.service.client)
    │   ├── ServiceBusy           as many runs running and queued as it takes
    │   └── ServiceGone           it went away before answering
    ├── AlreadyRunning            a service already runs for this RLM_HOME (rlm.service.server)
    ├── AccessDenied              an HTTP request without the service's token, or a path outside its roots
    │                             (rlm.service.access; also InputError subclasses for HTTP requests:
    │                             ModelNotFound in rlm.service.openai_api, UnknownFile in rlm.service.files)
    ├── PackagesError             installing the sandbox's analysis packages failed (rlm.sandbox.packages)
    ├── PeerError                 a peer library of the benchmarks cannot run (rlm.benchmarks.peers)
    └── TokenizerUnavailable      the benchmarks' offline tokenizer file is missing (rlm.benchmarks.tokens)

``HostCallError`` is raised by host functions (``llm_query``, ``note``, an
extension's own) and caught by the sandbox host, which hands its message to the
model's code as an exception; it never reaches a caller of :func:`rlm.run`.

A worker that breaks the protocol (malformed or oversized frames) is not an
exception: the host kills and restarts it and tells the model, like a crash.

``LimitReached`` is caught by the agent loop and turned into a result whose
``status`` names the limit; callers of :func:`rlm.run` only see it if they use
the lower-level pieces directly.
"""

from __future__ import annotations

__all__ = ["RLMError", "ConfigError", "InputError", "LMError", "HostCallError", "SandboxError", "SandboxUnavailable",
           "LocalModelError", "RunLogError", "LimitReached"]


class RLMError(Exception):
    """Root of every exception rlm raises on purpose."""


class ConfigError(RLMError):
    """An option, config field or environment variable has an invalid value."""


class InputError(RLMError):
    """The input (context) given by the user cannot be used; the message says why."""


class LMError(RLMError):
    """A language-model call failed after retries and fallbacks, or was refused before it was sent.

    Attributes:
        model: the model string (or group name) that failed.
        group, deployment, route_reason: where the router sent the call and why (``None``/empty
            when it was refused before a deployment was chosen).
    """

    def __init__(self, message: str, *, model: str = "", group: str | None = None, deployment: str | None = None,
                 route_reason: str = "") -> None:
        super().__init__(message)
        self.model = model
        self.group = group
        self.deployment = deployment
        self.route_reason = route_reason


class HostCallError(RLMError):
    """A host function failed in a way the model should see (e.g. a sub-call failed); see the module docstring."""


class SandboxError(RLMError):
    """The sandboxed REPL worker failed in a way that is not the model's fault."""


class SandboxUnavailable(SandboxError):
    """No isolation mechanism can run here; the message says how to fix it."""


class LocalModelError(RLMError):
    """The embedded local model server could not be found or started."""


class RunLogError(RLMError):
    """The run log database cannot be opened, migrated or read."""


class LimitReached(RLMError):
    """A tree-wide limit (calls, tokens, cost, time) was reached.

    Attributes:
        limit: the status name of the limit, e.g. ``"max_llm_calls"``.
    """

    def __init__(self, limit: str, message: str = "") -> None:
        super().__init__(message or f"limit reached: {limit}")
        self.limit = limit
