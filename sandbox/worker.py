"""The REPL worker: the only rlm code that runs inside the jail. Standard library only.

Run as ``python -m rlm.sandbox.worker`` or ``python -I -S .../sandbox/worker.py`` (in the jail:
``worker.pyc``, compiled by the host, with ``protocol.pyc`` and ``bigcontext.pyc`` beside it).
It keeps one persistent namespace across cells. ``context`` is loaded from a
read-only file named in the ``init`` frame (memory-mapped, never sent through a
pipe). The host functions ``llm_query``, ``llm_query_batched``, ``rlm_query``,
``rlm_query_batched`` are thin stubs that send a ``call`` frame and wait for the
``reply``; ``FINAL(value)`` ends the agent. See :mod:`protocol` for the frames.
"""

from __future__ import annotations

# Every import here is paid by every worker start. ``bigcontext`` (huge inputs only; it brings threading
# and signal) is imported when the context is loaded, and cells are parsed with ``_ast``, the C module
# behind ``ast`` (ast.py adds helpers this worker does not use, and contextlib). ``traceback`` stays
# here: importing it only when a cell failed would fail (and kill the worker) exactly when the cell
# has used up the memory or descriptor limits. ``resource`` is imported here, before the worker says it
# has booted, so a pre-started worker does not pay for it when its agent's ``init`` arrives.
import _ast
import codecs
import errno
import io
import json
import linecache
import mmap
import os
import resource
import sys
import traceback

# ``typing`` is not imported at run time (it would slow every worker start): these names exist for the type checker.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import ModuleType
    from typing import Any, NoReturn

if __package__:
    from . import protocol
else:  # run as a plain script inside the jail: protocol and bigcontext sit beside this file
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import protocol  # type: ignore[no-redef]  # the same module, found beside this file instead of in the package

#: Appended to errors that mean "the sandbox said no", so the model stops retrying.
SANDBOX_HINT = ("[sandbox] This REPL is isolated: no network, no new processes, a read-only filesystem "
                "except /tmp (size-capped), no host files or secrets. Work with `context` and the host "
                "functions (llm_query, rlm_query, ...).")
_DENIED_ERRNOS = {errno.EPERM, errno.EACCES, errno.EROFS, errno.EAFNOSUPPORT, errno.ENETUNREACH,
                  errno.ENOSYS, errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EMFILE}


#: A forked worker's context arrives as a descriptor: ``/proc/self/fd/N`` (see ``zygote.py``).
FD_PATH = "/proc/self/fd/"


class FinalAnswer(BaseException):
    """Raised by FINAL(); a BaseException so the model's ``except Exception`` cannot swallow it."""


class RunStopped(BaseException):
    """Raised when the host says the run is over (a limit tripped); ends the cell."""


class QueryError:
    """Placed in a batched result where one prompt failed. Falsy; ``str()`` explains the error."""

    def __init__(self, message: str) -> None:
        self.message = message

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"QueryError({self.message!r})"

    __str__ = __repr__


class CappedWriter(io.TextIOBase):
    """A text stream keeping at most ``cap`` characters and counting what it dropped."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.parts: list[str] = []
        self.size = 0
        self.dropped = 0

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        room = self.cap - self.size
        if room > 0:
            self.parts.append(text[:room])
            self.size += min(room, len(text))
        self.dropped += max(0, len(text) - max(room, 0))
        return len(text)

    def getvalue(self) -> str:
        return "".join(self.parts)


class Worker:
    """State of one REPL: the protocol descriptors, the namespace, the FINAL slot."""

    def __init__(self, in_fd: int, out_fd: int) -> None:
        self.in_fd = in_fd
        self.out_fd = out_fd
        self.call_seq = 0
        self.final: dict[str, str] | None = None
        self.max_output_chars = 20_000
        self.max_call_bytes = protocol.MAX_FRAME_BYTES
        self.namespace: dict[str, Any] = {}
        self.functions: dict[str, Any] = {}
        self.extra_functions: dict[str, list[str]] = {}

    # -- host calls --------------------------------------------------------------
    def call(self, name: str, **args: Any) -> Any:
        """Send a ``call`` frame and block for its ``reply``."""
        self.call_seq += 1
        call_id = self.call_seq
        frame = protocol.encode({"type": "call", "id": call_id, "name": name, "args": args})
        if len(frame) > self.max_call_bytes:
            raise ValueError(f"{name}: arguments are {len(frame)} bytes, over the limit of {self.max_call_bytes}")
        protocol.write_all(self.out_fd, frame)
        reply = protocol.read_frame(self.in_fd)
        if reply.get("type") != "reply" or reply.get("id") != call_id:
            raise RuntimeError("sandbox protocol error: unexpected reply")
        if reply.get("stop"):
            raise RunStopped(reply.get("error") or "the run was stopped")
        if not reply.get("ok"):
            raise RuntimeError(reply.get("error") or f"{name} failed")
        return reply.get("value")

    # -- the namespace -----------------------------------------------------------
    def build_namespace(self, context: object) -> dict[str, Any]:
        worker = self

        # The model calls these with anything: arguments are checked at run time (_text, _list, _ctx).
        def llm_query(prompt: Any, model: Any = None) -> Any:
            """Ask a sub-model one prompt; returns its reply text."""
            return worker.call("llm_query", prompt=_text(prompt, "prompt"), model=model)

        def llm_query_batched(prompts: Any, model: Any = None) -> list[Any]:
            """Ask many prompts concurrently; returns replies in order (QueryError for failures)."""
            prompts = [_text(p, "prompts[i]") for p in _list(prompts, "prompts")]
            return _batch(worker.call("llm_query_batched", prompts=prompts, model=model))

        def rlm_query(prompt: Any, context: Any = None, model: Any = None) -> Any:
            """Run a child agent (its own REPL) on ``prompt`` with its own ``context`` (on model group ``model``)."""
            return worker.call("rlm_query", prompt=_text(prompt, "prompt"), context=_ctx(context), model=model)

        def rlm_query_batched(prompts: Any, contexts: Any = None, model: Any = None) -> list[Any]:
            """Run many child agents concurrently; returns answers in order (QueryError for failures)."""
            prompts = [_text(p, "prompts[i]") for p in _list(prompts, "prompts")]
            contexts = [None] * len(prompts) if contexts is None else [_ctx(c) for c in _list(contexts, "contexts")]
            if len(contexts) != len(prompts):
                raise ValueError("rlm_query_batched: prompts and contexts must have the same length")
            return _batch(worker.call("rlm_query_batched", prompts=prompts, contexts=contexts, model=model))

        def FINAL(value: object) -> NoReturn:  # noqa: N802 - the name the model is taught
            """End this agent with ``value`` (converted to str) as its answer."""
            if worker.final is None:  # the first FINAL of a cell wins
                worker.final = {"value": value if isinstance(value, str) else str(value)}
            raise FinalAnswer()

        def FINAL_VAR(name: object) -> NoReturn:  # noqa: N802 - the name the model is taught
            """End this agent with the value of the variable named ``name``."""
            if not isinstance(name, str) or name not in worker.namespace:
                raise NameError(f"FINAL_VAR: no variable named {name!r}")
            FINAL(worker.namespace[name])

        namespace = {
            "__name__": "__main__",
            "__builtins__": __builtins__,
            "context": context,
            "llm_query": llm_query,
            "llm_query_batched": llm_query_batched,
            "rlm_query": rlm_query,
            "rlm_query_batched": rlm_query_batched,
            "FINAL": FINAL,
            "FINAL_VAR": FINAL_VAR,
            "QueryError": QueryError,
        }
        for name, params in self.extra_functions.items():
            namespace[name] = _stub(self, name, params)
        return namespace

    # -- cells -------------------------------------------------------------------
    def execute(self, cell_id: int, code: str) -> protocol.Message:
        """Run one cell; capture output; report errors and FINAL."""
        self.final = None
        stdout, stderr = CappedWriter(self.max_output_chars), CappedWriter(self.max_output_chars)
        error = None
        saved = sys.stdout, sys.stderr
        sys.stdout, sys.stderr = stdout, stderr
        try:
            run_cell(code, self.namespace, f"<cell {cell_id}>")
        except FinalAnswer:
            pass
        except RunStopped as exc:
            error = f"RunStopped: {exc}"
        except BaseException as exc:  # noqa: BLE001 - model errors go back to the model
            error = format_error(exc)
        finally:
            sys.stdout, sys.stderr = saved
        # Re-install the host functions the model may have overwritten.
        self.namespace.update({k: v for k, v in self.functions.items()})
        return {
            "type": "result",
            "id": cell_id,
            "stdout": stdout.getvalue(),
            "stderr": stderr.getvalue(),
            "truncated": stdout.dropped + stderr.dropped,
            "error": error,
            "final": self.final,
            "variables": describe_variables(self.namespace, self.functions),
        }

    def serve(self) -> None:
        protocol.write_frame(self.out_fd, {"type": "booted"})
        init = protocol.read_frame(self.in_fd)
        if init.get("type") != "init":
            raise SystemExit("worker: expected an init frame")
        self.max_output_chars = int(init.get("max_output_chars", self.max_output_chars))
        self.max_call_bytes = int(init.get("max_call_bytes", self.max_call_bytes))
        apply_rlimits(init.get("rlimits") or {})
        packages = init.get("packages_path")
        if isinstance(packages, str) and packages:
            # Last on the path: the standard library wins, and nothing is imported until model code asks.
            sys.path.append(packages)
        extra = init.get("extra_functions") or {}
        self.extra_functions = {str(k): [str(p) for p in v] for k, v in extra.items() if str(k).isidentifier()}
        context = load_context(init["context_path"], init.get("context_kind", "text"),
                               huge_input_bytes=int(init.get("huge_input_bytes", 0)),
                               regex_timeout_s=float(init.get("regex_timeout_s", 30.0)),
                               facts=init.get("context_facts"))
        self.namespace = self.build_namespace(context)
        self.functions = {k: v for k, v in self.namespace.items() if k != "context" and not k.startswith("__")}
        huge = type(context).__module__.endswith("bigcontext")  # a Context (no isinstance: lazily imported)
        if not huge and str(init["context_path"]).startswith(FD_PATH):
            os.close(int(init["context_path"][len(FD_PATH):]))  # decoded: the descriptor (and its host path) goes
        protocol.write_frame(self.out_fd, {
            "type": "ready", "pid": os.getpid(), "context_type": type(context).__name__,
            # a Context's length in characters costs a pass over the file: report bytes instead
            "context_length": context.nbytes if huge else len(context),
        })
        while True:
            message = protocol.read_frame(self.in_fd)
            kind = message.get("type")
            if kind == "execute":
                protocol.write_frame(self.out_fd, self.execute(int(message["id"]), str(message["code"])))
            elif kind == "shutdown":
                return


def _stub(worker: Worker, name: str, params: list[str]) -> Callable[..., Any]:
    """A host function declared by the host at init (e.g. ``note``, ``recall``): binds arguments by name."""

    def stub(*args: Any, **kwargs: Any) -> Any:
        if len(args) > len(params):
            raise TypeError(f"{name}() takes at most {len(params)} positional arguments ({len(args)} given)")
        bound = dict(zip(params, args, strict=False))  # fewer arguments than parameters is fine
        for key, value in kwargs.items():
            if key not in params:
                raise TypeError(f"{name}() got an unexpected keyword argument {key!r}")
            if key in bound:
                raise TypeError(f"{name}() got multiple values for argument {key!r}")
            bound[key] = value
        return worker.call(name, **bound)

    stub.__name__ = stub.__qualname__ = name
    stub.__doc__ = f"{name}({', '.join(params)}) — a host function."
    return stub


def _text(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    return value


def _list(value: Any, name: str) -> list[Any]:
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise TypeError(f"{name} must be a list, not {type(value).__name__}")
    return list(value)


def _ctx(value: Any) -> Any:
    """A child's context must be plain data (str, or a list/dict of plain data)."""
    if value is None or isinstance(value, str):
        return value
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        raise TypeError("context for rlm_query must be a str or JSON-serializable data") from None
    return value


def _batch(items: list[Any]) -> list[Any]:
    """Turn ``{"error": ...}`` entries of a batched reply into QueryError objects and tell the model."""
    results: list[Any] = []
    failed = 0
    for item in items:
        if isinstance(item, dict) and "error" in item:
            results.append(QueryError(str(item["error"])))
            failed += 1
        else:
            results.append(item.get("value") if isinstance(item, dict) else item)
    if failed:
        print(f"[rlm] {failed} of {len(items)} batched queries failed; those items are QueryError "
              f"objects (falsy; check with isinstance(x, QueryError)).", file=sys.stderr)
    return results


#: Sized builtin types: ``len()`` of anything else could run model code after the cell ended.
_SIZED = (str, bytes, list, tuple, dict, set, frozenset)
MAX_VARIABLES = 40


def describe_variables(namespace: dict[str, Any], hidden: dict[str, Any]) -> list[list[Any]]:
    """``[name, type name, length or None]`` of the model's variables (not modules, host functions or _names)."""
    entries: list[list[Any]] = []
    for name, value in namespace.items():
        if name.startswith("_") or name in hidden or name == "context" or type(value).__name__ == "module":
            continue
        if len(entries) == MAX_VARIABLES:
            break
        entries.append([name, type(value).__name__, len(value) if type(value) in _SIZED else None])
    return entries


def run_cell(code: str, namespace: dict[str, Any], filename: str) -> None:
    """Exec ``code``; like a notebook, the value of a final bare expression is printed."""
    tree = compile(code, filename, "exec", _ast.PyCF_ONLY_AST)  # what ast.parse does
    assert isinstance(tree, _ast.Module)  # mode "exec" parses to a Module
    linecache.cache[filename] = (len(code), None, code.splitlines(True), filename)
    last = None
    if tree.body and isinstance(tail := tree.body[-1], _ast.Expr):
        tree.body.pop()
        last = _ast.Expression(tail.value)
    exec(compile(tree, filename, "exec"), namespace)  # noqa: S102 - this is the REPL
    if last is not None:
        value = eval(compile(last, filename, "eval"), namespace)  # noqa: S307 - the REPL shows the last value
        if value is not None:
            print(repr(value))


def format_error(exc: BaseException) -> str:
    """A traceback showing only the model's own frames (not the worker's)."""
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename.startswith("<cell")]
    lines = traceback.format_list(frames)
    tail = "".join(traceback.format_exception_only(type(exc), exc))
    if _denied_by_sandbox(exc):
        tail += SANDBOX_HINT + "\n"
    elif isinstance(exc, MemoryError):
        tail += "[sandbox] The REPL's memory limit was reached; work on smaller pieces.\n"
    if frames:
        return "Traceback (most recent call last):\n" + "".join(lines) + tail
    return tail


def _denied_by_sandbox(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in _DENIED_ERRNOS:
        return True
    import socket  # only when formatting an error

    return isinstance(exc, socket.gaierror) or (isinstance(exc, RuntimeError) and "new thread" in str(exc))


def apply_rlimits(limits: dict[str, Any]) -> None:
    """Set hard = soft rlimits (e.g. ``{"AS": bytes, "CPU": seconds}``) before any model code runs.

    Inside the jail the worker has no CAP_SYS_RESOURCE in the host's user
    namespace, so model code cannot raise them again.
    """
    for name, value in limits.items():
        which = getattr(resource, "RLIMIT_" + name)
        if name == "CPU":  # soft < hard: SIGXCPU first, then SIGKILL
            resource.setrlimit(which, (int(value), int(value) + 5))
        else:
            resource.setrlimit(which, (int(value), int(value)))


def load_context(path: str, kind: str, *, huge_input_bytes: int = 0, regex_timeout_s: float = 30.0,
                 facts: dict[str, Any] | None = None) -> Any:
    """Map the read-only context file and decode it without an intermediate bytes copy.

    A text input larger than ``huge_input_bytes`` (when > 0) stays mapped: ``context``
    is then a :class:`bigcontext.Context`, never one big ``str``; ``facts`` (the host's
    validation results: length, pure ASCII, offset checkpoints) spare it a pass over the file.
    """
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if kind == "text" and 0 < huge_input_bytes < size:
            bigcontext = _bigcontext()
            bigcontext.install_re_dispatch()
            return bigcontext.Context(path, regex_timeout_s=regex_timeout_s, facts=facts)
        if size == 0:
            data = ""
        else:
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                data = codecs.decode(memoryview(mapped), "utf-8", "replace")
    if kind == "documents":
        return json.loads(data)
    return data


def _bigcontext() -> ModuleType:
    """The huge-input module, imported only when an input is huge."""
    if __package__:
        from . import bigcontext
    else:
        import bigcontext  # type: ignore[no-redef]  # the same module, found beside this file
    return bigcontext


def main() -> None:
    # Move the protocol pipes off fds 0/1 so model code printing (or writing to
    # fd 1 directly) can never corrupt a frame; fds 0/1 become /dev/null.
    in_fd, out_fd = os.dup(0), os.dup(1)
    for fd in (in_fd, out_fd):
        os.set_inheritable(fd, False)
    devnull = os.open(os.devnull, os.O_RDWR)
    os.dup2(devnull, 0)
    os.dup2(devnull, 1)
    os.close(devnull)
    sys.stdin = open(os.devnull)  # noqa: SIM115 - stdin for the rest of the process
    try:
        Worker(in_fd, out_fd).serve()
    except protocol.FrameError:
        pass  # the host went away


if __name__ == "__main__":
    main()
