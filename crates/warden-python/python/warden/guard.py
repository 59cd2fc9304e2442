"""Guards: a tool call is decided before it runs, and its result after.

A denied call raises ``PolicyDenied`` (with the rule and the reasons) and the function never
runs; arguments the policy redacts reach the function redacted, and a result the policy redacts
reaches the caller redacted. The framework adapters in ``warden.integrations`` are built on
``Guard``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import inspect
from typing import Any, Callable, Iterator, Mapping, Optional, Protocol, TypeVar, Union

from ._warden import Decision, Engine, WardenError

F = TypeVar("F", bound=Callable[..., Any])


class Decider(Protocol):
    """What decides: an ``Engine`` (in-process) or a ``Client`` (a remote ``warden serve``)."""

    def decide(self, request: Any) -> Decision: ...


class PolicyDenied(WardenError):
    """The policy denied a tool call (or a tool result).

    ``decision`` is the whole decision; ``rule`` the rule that decided (``None`` when nothing
    allowed the call under a default-deny policy), ``reasons`` its reasons, ``tool`` the tool.
    """

    def __init__(self, decision: Decision, tool: Optional[str] = None) -> None:
        self.decision = decision
        self.rule: Optional[str] = decision.rule
        self.reasons: list = list(decision.reasons)
        self.tool = tool
        why = "; ".join(self.reasons) if self.reasons else "no rule allows it"
        where = f"`{tool}` " if tool else ""
        rule = f" (rule `{self.rule}`)" if self.rule else ""
        super().__init__(f"{where}denied by policy: {why}{rule}")


_default: Optional[Decider] = None
_session: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar(
    "warden_session", default=None
)
_principal: contextvars.ContextVar[Optional[str]] = contextvars.ContextVar(
    "warden_principal", default=None
)


def set_default(decider: Optional[Decider]) -> None:
    """Sets the engine (or client) guards use when none is given to them."""
    global _default
    _default = decider


def get_default() -> Optional[Decider]:
    """The engine (or client) guards use when none is given to them."""
    return _default


@contextlib.contextmanager
def session(session_id: Optional[str], principal: Optional[str] = None) -> Iterator[None]:
    """Within the block (and the tasks and threads started with its context), guards decide
    in session ``session_id`` as ``principal``: taints and history are kept per session."""
    token = _session.set(session_id)
    ptoken = _principal.set(principal) if principal is not None else None
    try:
        yield
    finally:
        _session.reset(token)
        if ptoken is not None:
            _principal.reset(ptoken)


def current_session() -> Optional[str]:
    """The session set by the innermost ``warden.session(...)`` block, if any."""
    return _session.get()


SessionArg = Union[None, str, Callable[[], Optional[str]]]


class Guard:
    """Decides tool calls and tool results with ``decider`` (default: ``set_default``'s).

    ``session`` and ``principal`` are fixed strings, callables returning one, or ``None`` to
    use the ``warden.session(...)`` block in force. ``check_results=False`` skips deciding
    results (no redaction or denial of what the tool returned).
    """

    def __init__(
        self,
        decider: Optional[Decider] = None,
        *,
        session: SessionArg = None,
        principal: SessionArg = None,
        check_results: bool = True,
    ) -> None:
        self._decider = decider
        self._session = session
        self._principal = principal
        self.check_results = check_results

    @property
    def decider(self) -> Decider:
        decider = self._decider if self._decider is not None else _default
        if decider is None:
            raise WardenError(
                "no engine: pass one to the guard, or call warden.set_default(engine)"
            )
        return decider

    def _request(self, kind: str, tool: str, key: str, value: Any) -> dict:
        request: dict = {"kind": kind, "tool": tool, key: value}
        sid = self._session() if callable(self._session) else self._session
        if sid is None:
            sid = _session.get()
        if sid is not None:
            request["session"] = sid
        who = self._principal() if callable(self._principal) else self._principal
        if who is None:
            who = _principal.get()
        if who is not None:
            request["principal"] = who
        return request

    def _remote(self) -> bool:
        # Only a remote decider blocks on I/O; the engine decides in microseconds.
        return not isinstance(self.decider, Engine)

    def check_call(self, tool: str, args: Mapping[str, Any]) -> dict:
        """Decides calling ``tool`` with ``args``: raises ``PolicyDenied`` on deny, returns the
        arguments to call it with (redacted when the policy redacts them)."""
        args = dict(args)
        decision = self.decider.decide(self._request("tool_call", tool, "args", args))
        if not decision.allowed:
            raise PolicyDenied(decision, tool)
        redacted = decision.redacted
        return redacted if redacted is not None else args

    def check_result(self, tool: str, result: Any) -> Any:
        """Decides ``tool``'s ``result``: raises ``PolicyDenied`` on deny, returns the result to
        hand on (redacted when the policy redacts it)."""
        if not self.check_results:
            return result
        decision = self.decider.decide(self._request("tool_result", tool, "result", result))
        if not decision.allowed:
            raise PolicyDenied(decision, tool)
        redacted = decision.redacted
        return redacted if redacted is not None else result

    async def acheck_call(self, tool: str, args: Mapping[str, Any]) -> dict:
        """``check_call`` for async code (a remote decider runs in a worker thread)."""
        if self._remote():
            return await _to_thread(self.check_call, tool, args)
        return self.check_call(tool, args)

    async def acheck_result(self, tool: str, result: Any) -> Any:
        """``check_result`` for async code (a remote decider runs in a worker thread)."""
        if self._remote():
            return await _to_thread(self.check_result, tool, result)
        return self.check_result(tool, result)


async def _to_thread(fn: Callable[..., Any], *args: Any) -> Any:
    # asyncio.to_thread, which also carries the context (the warden.session block).
    return await asyncio.to_thread(fn, *args)


def guard(
    tool: Optional[str] = None,
    *,
    engine: Optional[Decider] = None,
    session: SessionArg = None,
    principal: SessionArg = None,
    check_results: bool = True,
) -> Callable[[F], F]:
    """Decorates a function (sync or async) as the tool ``tool`` (default: its name).

    Each call is decided first, with the function's arguments by parameter name as ``args``:
    deny raises ``PolicyDenied`` and the function does not run; redacted arguments are what it
    receives. Its return value is then decided as the tool's result (unless
    ``check_results=False``): deny raises ``PolicyDenied``, a redacted result is returned.
    Arguments and results must be JSON values (``RequestError`` names the one that is not).
    """

    def decorate(fn: F) -> F:
        name = tool or fn.__name__
        signature = inspect.signature(fn)
        g = Guard(engine, session=session, principal=principal, check_results=check_results)

        def bind(args: tuple, kwargs: dict) -> inspect.BoundArguments:
            bound = signature.bind(*args, **kwargs)
            bound.apply_defaults()
            return bound

        def rebind(bound: inspect.BoundArguments, checked: Mapping[str, Any]) -> None:
            for key, value in checked.items():
                if key in bound.arguments:
                    bound.arguments[key] = value

        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                bound = bind(args, kwargs)
                checked = await g.acheck_call(name, bound.arguments)
                rebind(bound, checked)
                result = await fn(*bound.args, **bound.kwargs)
                return await g.acheck_result(name, result)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            bound = bind(args, kwargs)
            checked = g.check_call(name, bound.arguments)
            rebind(bound, checked)
            result = fn(*bound.args, **bound.kwargs)
            return g.check_result(name, result)

        return wrapper  # type: ignore[return-value]

    return decorate
