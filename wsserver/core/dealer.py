"""
The dealer of one realm: remote procedure calls (WAMP Basic Profile, and of the Advanced Profile
progressive call results, call canceling, call timeouts, caller identification, shared and
pattern-based registrations, and the registration meta events).

Theory of operation
-------------------
A :class:`Registration` binds one procedure URI or pattern (with its ``match`` policy) to its
callees, sessions, or to the router itself (a Python function: the meta API). Registrations are
kept in the broker's pattern index by (procedure, match) (to route CALLs) and by id (for
UNREGISTER), and each session knows its own, so a callee that leaves takes itself out of each; a
registration exists exactly as long as it has a callee. Each change is told as the meta events
``wamp.registration.on_create/on_register/on_unregister/on_delete`` (through ``publish_meta``, the
broker's), as the broker tells of subscriptions.

A pattern-based registration (REGISTER ``match``: ``prefix``, ``wildcard``; the broker's policies
and pattern rules, see matching.py) is reached by every procedure its pattern matches that no
better registration has: an exact registration wins over any prefix, a longer prefix over a
shorter one, any prefix over any wildcard, and among wildcards the one with more components before
its first empty one (then the oldest). INVOCATION then carries the called URI in
``details.procedure``. The ``wamp.`` namespace is the router's: no pattern reaches a procedure in
it (a call of one the router does not provide gets ``wamp.error.no_such_procedure``).

A shared registration (REGISTER ``invoke``: ``roundrobin``, ``random``, ``first``, ``last``) has
one id and every callee that registered the procedure with the same policy, in the order they
came; each CALL goes to one of them: the next in turn, one drawn from the injected ``random_id``,
the first or the last still there. ``single`` (the default) allows one callee; a REGISTER whose
policy differs from the registration's (or ``single`` on either side) is refused with
``wamp.error.procedure_already_exists``, as is the same session registering twice.

A call to a session callee is an :class:`Invocation` in flight::

    caller --CALL(request)--> dealer --INVOCATION(invocation id)--> callee
    caller <--RESULT(request)-- dealer <--YIELD(invocation id)----- callee
    caller <--ERROR(CALL, request)-- dealer <--ERROR(INVOCATION)--- callee

kept by invocation id and in both sessions' ``invocations`` (and counted per caller, for the
router's limit on calls in flight), until the callee answers or either side leaves:

- the callee leaves: the caller gets ERROR ``wamp.error.canceled`` at once, never a hang;
- the caller leaves, or stops waiting (``forget_call``, the HTTP API's timeout): the invocation is
  forgotten, and the callee's late answer is dropped (as is any YIELD or ERROR for an invocation
  that is not in flight, or not the sender's to answer);
- the callee answers with something the caller's wire format may not carry (the router decides):
  the caller gets ERROR ``wamp.error.invalid_argument`` instead (:meth:`Dealer.undeliverable`),
  and the callee nothing, as for any answer (WAMP has no reply to YIELD).

A callee on another node of a cluster (see :mod:`wsserver.core.cluster`) is known by its
procedure and node only (:meth:`Dealer.registered_elsewhere`): a CALL to it is an invocation with
no local callee, handed to ``elsewhere.invoke``, and ends with :meth:`Dealer.answer_from_elsewhere`
or when that node is lost (ERROR ``wsserver.error.node_lost``). A call from another node to a
callee here is an invocation with no local caller, answered through ``elsewhere.answer``. Only a
single exact registration is announced to the other nodes: shared (and pattern) registrations
serve this node's callers only. A procedure is registered once in the whole cluster: a REGISTER of a procedure another node has is
refused with ``wamp.error.procedure_already_exists``. (Two nodes that register the same procedure
within the time an announcement takes both keep it; each node's callers then reach its own.)

What the caller may ask of a call to a session callee (the Advanced Profile):

- ``receive_progress``: the callee sees it in INVOCATION details, and each of its YIELDs with
  ``progress: true`` is a RESULT with ``progress: true``; the call stays in flight until the
  final YIELD (or ERROR). A progressive YIELD for a call that did not ask for it is a protocol
  violation of the callee (the router ABORTs it): nothing else would stop a flood of them.
- CANCEL, by its CALL's request id, ``mode``:

  ``skip``        the caller gets ERROR ``wamp.error.canceled`` at once; the callee is not told,
                  and its answer is dropped;
  ``killnowait``  the same, and the callee gets INTERRUPT;
  ``kill``        (the default, as in Crossbar) the callee gets INTERRUPT and the call stays in
                  flight: the caller gets the callee's answer, RESULT or (usually) ERROR, whichever
                  the callee sends first; progressive results after the CANCEL are dropped.

  A CANCEL for a call that is not the sender's or not in flight (it raced its RESULT) is
  dropped: WAMP has no reply to CANCEL. Only a callee whose HELLO announced the callee feature
  ``call_canceling`` is sent INTERRUPT (AutobahnJS, for one, does not and would abort on it):
  for the others, every mode is ``skip``.
- ``timeout`` (ms, 0: none): when it passes before the final answer, the caller gets ERROR
  ``wamp.error.canceled`` (the spec's "the call is canceled", as Crossbar answers; the detail
  says it timed out) and the callee INTERRUPT ``killnowait`` with reason ``wamp.error.timeout``
  (if it announced ``call_canceling``).
  The dealer reads the injected clock only: whoever drives it calls :meth:`Dealer.expire`
  (the router's :meth:`~wsserver.core.router.Router.expire_calls`, on a timer of the adapter).
  Deadlines are a heap of (deadline, invocation id) whose stale entries are dropped lazily, and
  the heap is rebuilt once it holds more than twice the calls that have one, so calls answered
  long before their timeout leave nothing behind.
- ``disclose_me``: the callee sees ``caller``, ``caller_authid`` and ``caller_authrole`` in
  INVOCATION details (the router checks the caller's role may ``disclose`` on the procedure).

Across nodes, a call keeps the Basic Profile: the remote callee is not offered progress (the
caller gets the final result only), and a CANCEL or timeout ends the call for its caller as
``skip`` does (no INTERRUPT reaches the other node; its callee's answer is dropped).

A call to the router's own procedure runs at once: the function returns a :class:`Reply` (or
raises autobahn's ``ApplicationError``, which becomes the ERROR), and the caller gets RESULT. A
procedure that must ask a store shared by several nodes returns :class:`Later` instead: the
dealer answers with an ``Ask``, and the RESULT (or ERROR) follows the store's answer, if the
caller is still there. Until then it counts as one of the caller's calls in flight: each asks
Redis on the connection that also stores publications, so a session may not queue more.

Not implemented (and not announced in WELCOME): progressive call invocations.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any, Generic, cast

from autobahn.wamp import message as wamp
from autobahn.wamp.exception import ApplicationError, InvalidUriError

from wsserver.core import meta
from wsserver.core.actions import Action, Ask, Send, error_reply
from wsserver.core.cluster import NODE_LOST, Elsewhere, RemoteAnswer, RemoteCall
from wsserver.core.matching import EXACT, POLICIES, PREFIX, PatternIndex, check_pattern
from wsserver.core.session import PeerT, Session, State, with_member, without_member
from wsserver.core.shared import Turns

CALL = wamp.Call.MESSAGE_TYPE
#: CANCEL modes (the spec's).
SKIP, KILL, KILL_NO_WAIT = "skip", "kill", "killnowait"
#: The INTERRUPT reason when a call's timeout passed (the caller gets ``wamp.error.canceled``).
TIMEOUT = "wamp.error.timeout"
#: Stale deadlines the heap may hold beyond twice the live ones before it is rebuilt.
DEADLINE_SLACK = 64
#: Invocation policies of a shared registration (``single``: not shared, the default).
SINGLE, ROUNDROBIN, RANDOM, FIRST, LAST = "single", "roundrobin", "random", "first", "last"
INVOKE_POLICIES = (SINGLE, ROUNDROBIN, RANDOM, FIRST, LAST)


@dataclass(frozen=True, slots=True)
class Reply(Generic[PeerT]):
    """What a procedure of the router returns: the RESULT payload, and actions to carry out after it."""

    args: list[Any] | None = None
    kwargs: dict[str, Any] | None = None
    then: list[Action[PeerT]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Later(Generic[PeerT]):
    """What a procedure returns whose answer needs a shared store: ``ask()`` it, then ``answer(result)`` (may raise ``ApplicationError``)."""

    ask: Callable[[], Any]
    answer: Callable[[Any], Reply[PeerT]]


#: A procedure the router provides: (caller, args, kwargs) -> reply; raises ``ApplicationError``.
Provider = Callable[[Session[PeerT], list[Any], dict[str, Any]], "Reply[PeerT] | Later[PeerT]"]


class Registration(Generic[PeerT]):
    """
    A procedure (a pattern, with ``match``) and who answers it: its ``callees`` (sessions, in the
    order they registered; more than one only for a shared registration) or the router (``provider``).
    """

    __slots__ = ("id", "procedure", "match", "invoke", "created", "callees", "provider", "turn")

    def __init__(
        self,
        registration_id: int,
        procedure: str,
        *,
        match: str = EXACT,
        invoke: str = SINGLE,
        created: float = 0.0,
        provider: Provider[PeerT] | None = None,
    ) -> None:
        self.id = registration_id
        self.procedure = procedure
        self.match = match
        self.invoke = invoke
        #: When it was created, in seconds since the epoch (the dealer's clock).
        self.created = created
        self.callees: list[Session[PeerT]] = []
        self.provider = provider
        #: How many calls ``roundrobin`` has handed out.
        self.turn = 0

    def __repr__(self) -> str:
        return f"<Registration {self.id} {self.match} {self.procedure!r} {self.invoke} x{len(self.callees)}>"


class Invocation(Generic[PeerT]):
    """
    A call in flight: the caller's CALL request id, and the callee that must answer. Across
    nodes, one side is elsewhere: no ``callee`` here but its ``node``, or no ``caller`` here but
    ``origin``, (caller's node, its invocation id).
    """

    __slots__ = ("id", "caller", "request", "callee", "node", "origin", "progress", "deadline", "killed")

    def __init__(
        self,
        invocation_id: int,
        caller: Session[PeerT] | None,
        request: int,
        callee: Session[PeerT] | None,
        *,
        node: str | None = None,
        origin: tuple[str, int] | None = None,
    ) -> None:
        self.id = invocation_id
        self.caller = caller
        self.request = request
        self.callee = callee
        self.node = node
        self.origin = origin
        #: The caller asked for progressive results (and the callee was told).
        self.progress = False
        #: When the call's timeout passes (clock seconds), or None.
        self.deadline: float | None = None
        #: The caller canceled it with mode ``kill``: INTERRUPT was sent, the final answer still goes to the caller.
        self.killed = False


def _wildcard_rank(registration: Registration[Any]) -> tuple[int, int]:
    """Orders wildcard registrations, most specific first: more components before the first empty one, then older."""
    components = registration.procedure.split(".")
    return -components.index("") if "" in components else -len(components), registration.id


class Dealer(Generic[PeerT]):
    """
    The dealer of one realm. ``next_id`` gives registration and invocation ids (router scope).
    ``elsewhere``: the other nodes of a cluster, told of this realm's (``realm``) registrations
    and calls across nodes (None: this node only). ``clock``: seconds, for call timeouts.
    """

    def __init__(
        self,
        next_id: Callable[[], int],
        *,
        realm: str = "",
        elsewhere: Elsewhere | None = None,
        clock: Callable[[], float] = lambda: 0.0,
        random_id: Callable[[], int] = lambda: 1,
        publish_meta: Callable[..., list[Action[PeerT]]] = lambda topic, *args: [],
    ) -> None:
        self._next_id = next_id
        self._publish_meta = publish_meta
        self._clock = clock
        self._random_id = random_id
        self._realm = realm
        self._elsewhere = elsewhere
        #: Procedures registered on other nodes: procedure -> (node, its registration id).
        self.elsewhere: dict[str, tuple[str, int]] = {}
        #: (procedure pattern, match) -> registration: the broker's index (see matching.py).
        self._index: PatternIndex[Registration[PeerT]] = PatternIndex()
        self._by_id: dict[int, Registration[PeerT]] = {}
        self._in_flight: dict[int, Invocation[PeerT]] = {}
        #: (caller, CALL request id) -> its invocation, for CANCEL.
        self._by_request: dict[tuple[Session[PeerT], int], Invocation[PeerT]] = {}
        #: (deadline, invocation id) of calls with a timeout; entries of calls no longer in flight stay until popped.
        self._deadlines: list[tuple[float, int]] = []
        #: How many calls in flight have a deadline.
        self._timed = 0
        #: Caller -> how many of its calls are in flight (callers with none are not kept).
        self._calls_made: dict[Session[PeerT], int] = {}
        #: Callers' reads of the shared store: a few asked at once per caller, the others wait.
        self._turns: Turns[PeerT] = Turns()

    def __len__(self) -> int:
        """How many registrations, the router's own included."""
        return len(self._by_id)

    # -- the sessions' registrations, for the meta API (the router's own are not among them) ------

    def __iter__(self) -> Iterator[Registration[PeerT]]:
        return (r for r in self._by_id.values() if r.provider is None)

    def get(self, registration_id: int) -> Registration[PeerT] | None:
        registration = self._by_id.get(registration_id)
        return None if registration is None or registration.provider is not None else registration

    def lookup(self, procedure: str, match: str) -> Registration[PeerT] | None:
        """The registration of exactly this (procedure, policy), if any."""
        registration = self._index.get(procedure, match)
        return None if registration is None or registration.provider is not None else registration

    def route(self, procedure: str) -> Registration[PeerT] | None:
        """
        The registration a CALL of ``procedure`` reaches: the exact one, else the longest prefix,
        else the wildcard with the most components before its first empty one (then the oldest).
        The router's namespace is reached by exact registrations only.
        """
        exact = self._index.get(procedure, EXACT)
        if exact is not None or meta.is_reserved(procedure):
            return exact
        found = self._index.matching(procedure)  # exact, then prefixes shortest first, then wildcards
        prefixes = [r for r in found if r.match == PREFIX]
        if prefixes:
            return prefixes[-1]
        return min(found, key=_wildcard_rank, default=None)

    def provide(self, procedure: str, provider: Provider[PeerT]) -> None:
        """Register one of the router's own procedures."""
        self._add(Registration(self._next_id(), procedure, provider=provider))

    # -- client requests -------------------------------------------------------------------------

    def register(self, session: Session[PeerT], request: wamp.Register) -> list[Action[PeerT]]:
        match, invoke = request.match or EXACT, request.invoke or SINGLE
        registration = self._index.get(request.procedure, match)
        refusal = self._refusal(session, request, match, invoke, registration)
        if refusal is not None:
            error, detail = refusal
            return [error_reply(session, request.MESSAGE_TYPE, request.request, error, detail)]
        created = registration is None
        if registration is None:
            registration = Registration(
                self._next_id(), request.procedure, match=match, invoke=invoke, created=self._clock()
            )
            self._add(registration)
            if self._elsewhere is not None and self._announced(registration):
                self._elsewhere.registered(self._realm, registration.procedure, registration.id)
        registration.callees.append(session)
        session.registrations = with_member(session.registrations, registration)
        actions: list[Action[PeerT]] = [Send(wamp.Registered(request.request, registration.id), (session,))]
        details = meta.registration_details(registration)
        for topic, args in meta.REGISTRATION_EVENTS.joined(session.id, details, created=created):
            actions += self._publish_meta(topic, *args)
        return actions

    def unregister(self, session: Session[PeerT], request: wamp.Unregister) -> list[Action[PeerT]]:
        registration = self._by_id.get(request.registration)
        if registration is None or session not in registration.callees:
            detail = f"no registration {request.registration} for this session"
            error = ApplicationError.NO_SUCH_REGISTRATION
            return [error_reply(session, request.MESSAGE_TYPE, request.request, error, detail)]
        return [Send(wamp.Unregistered(request.request), (session,)), *self._leave(session, registration)]

    def call(self, caller: Session[PeerT], request: wamp.Call, *, disclose_me: bool = False) -> list[Action[PeerT]]:
        """``caller``'s CALL (already allowed by the router, ``disclose_me`` included)."""
        registration = self.route(request.procedure)
        owner = self.elsewhere.get(request.procedure)
        if owner is not None and self._elsewhere is not None and (registration is None or registration.match != EXACT):
            # An exact registration on another node wins over a pattern here, as it would here.
            return self._call_elsewhere(caller, request, owner[0], self._elsewhere)
        if registration is None:
            detail = f"no callee registered procedure {request.procedure!r}"
            return [error_reply(caller, CALL, request.request, ApplicationError.NO_SUCH_PROCEDURE, detail)]
        if registration.provider is not None:
            return self._provide(registration.provider, caller, request)
        callee = self._callee(registration)
        invocation = Invocation(self._next_id(), caller, request.request, callee)
        invocation.progress = bool(request.receive_progress)
        self._track(invocation, request.timeout)
        callee.invocations = with_member(callee.invocations, invocation)
        disclosed: dict[str, Any] = (
            {"caller": caller.id, "caller_authid": caller.authid, "caller_authrole": caller.authrole} if disclose_me else {}
        )
        message = wamp.Invocation(
            invocation.id, registration.id, args=request.args, kwargs=request.kwargs,
            receive_progress=invocation.progress or None, procedure=self._called(registration, request.procedure),
            **disclosed,
        )
        return [Send(message, (callee,))]

    def cancel(self, caller: Session[PeerT], request: wamp.Cancel) -> list[Action[PeerT]]:
        """``caller``'s CANCEL of its CALL ``request.request`` (see the modes above)."""
        invocation = self._by_request.get((caller, request.request))
        if invocation is None:
            return []
        mode = request.mode or KILL
        callee = invocation.callee
        if callee is None or not callee.interruptible:
            mode = SKIP  # nobody to tell: a callee elsewhere, or one that did not announce call_canceling
        if mode == KILL:
            if invocation.killed:
                return []
            invocation.killed = True
            return self._interrupt(invocation, KILL)
        self._forget(invocation)
        actions = self._interrupt(invocation, KILL_NO_WAIT) if mode == KILL_NO_WAIT else []
        detail = f"the caller canceled the call (mode {mode})"
        actions.append(error_reply(caller, CALL, invocation.request, ApplicationError.CANCELED, detail))
        return actions

    def expire(self) -> list[Action[PeerT]]:
        """End the calls whose timeout passed (by the clock): ERROR to their callers, INTERRUPT to their callees."""
        now = self._clock()
        actions: list[Action[PeerT]] = []
        while self._deadlines and self._deadlines[0][0] <= now:
            deadline, invocation_id = heapq.heappop(self._deadlines)
            invocation = self._in_flight.get(invocation_id)
            if invocation is None or invocation.deadline != deadline:
                continue
            self._forget(invocation)
            actions += self._interrupt(invocation, KILL_NO_WAIT, TIMEOUT)
            # Only calls made here have a deadline (a call from elsewhere is timed by its caller's node).
            assert invocation.caller is not None
            detail = "the call's timeout passed before the callee answered"
            actions.append(error_reply(invocation.caller, CALL, invocation.request, ApplicationError.CANCELED, detail))
        return actions

    def timers(self) -> int:
        """How many deadlines the dealer keeps (live and stale): what the property tests bound."""
        return len(self._deadlines)

    def progress_refusal(self, callee: Session[PeerT], invocation_id: int) -> str | None:
        """Why ``callee`` may not send a progressive YIELD for ``invocation_id`` (a protocol violation), or None."""
        invocation = self._in_flight.get(invocation_id)
        if invocation is None or invocation.callee is not callee or invocation.progress:
            return None  # not in flight (late, canceled): dropped as any late answer is
        return f"YIELD with progress for invocation {invocation_id}, whose caller did not ask for progressive results"

    def yield_result(self, callee: Session[PeerT], answer: wamp.Yield) -> list[Action[PeerT]]:
        """A YIELD; the router has refused a progressive one the caller did not ask for (:meth:`progress_refusal`)."""
        if answer.progress:
            return self._progress(callee, answer)
        invocation = self._answered(callee, answer.request)
        if invocation is None:
            return []
        if invocation.caller is None:
            return self._answer_elsewhere(invocation, None, answer.args, answer.kwargs)
        result = wamp.Result(invocation.request, args=answer.args, kwargs=answer.kwargs)
        return [Send(result, (invocation.caller,))]

    def _progress(self, callee: Session[PeerT], answer: wamp.Yield) -> list[Action[PeerT]]:
        """A progressive result: RESULT with ``progress`` to the caller; the call stays in flight."""
        invocation = self._in_flight.get(answer.request)
        if invocation is None or invocation.callee is not callee or invocation.caller is None or invocation.killed:
            return []
        if not invocation.progress:
            return []
        result = wamp.Result(invocation.request, args=answer.args, kwargs=answer.kwargs, progress=True)
        return [Send(result, (invocation.caller,))]

    def callee_error(self, callee: Session[PeerT], answer: wamp.Error) -> list[Action[PeerT]]:
        """An ERROR answering an INVOCATION."""
        invocation = self._answered(callee, answer.request)
        if invocation is None:
            return []
        if invocation.caller is None:
            return self._answer_elsewhere(invocation, answer.error, answer.args, answer.kwargs)
        error = wamp.Error(CALL, invocation.request, answer.error, args=answer.args, kwargs=answer.kwargs)
        return [Send(error, (invocation.caller,))]

    def undeliverable(self, callee: Session[PeerT], invocation_id: int, reason: str) -> list[Action[PeerT]]:
        """
        ``callee``'s answer (YIELD or ERROR) to ``invocation_id`` cannot be delivered, for
        ``reason``: the call ends, and its caller gets ERROR ``wamp.error.invalid_argument``.
        """
        invocation = self._answered(callee, invocation_id)
        if invocation is None:
            return []
        detail = f"the callee's answer cannot be delivered: {reason}"
        if invocation.caller is None:
            return self._answer_elsewhere(invocation, ApplicationError.INVALID_ARGUMENT, [detail], None)
        return [error_reply(invocation.caller, CALL, invocation.request, ApplicationError.INVALID_ARGUMENT, detail)]

    def calls_in_flight(self, caller: Session[PeerT]) -> int:
        """How many of ``caller``'s calls wait for their callee's answer."""
        return self._calls_made.get(caller, 0)

    def drop(self, session: Session[PeerT]) -> list[Action[PeerT]]:
        """``session`` left: forget its registrations and calls; cancel the calls it had to answer."""
        actions: list[Action[PeerT]] = []
        for registration in sorted(session.registrations, key=attrgetter("id")):
            actions += self._leave(session, registration)
        for invocation in sorted(session.invocations, key=attrgetter("id")):
            self._forget(invocation)
            if invocation.callee is session and invocation.caller is not session:
                error, detail = ApplicationError.CANCELED, "the callee left before it answered"
                if invocation.caller is None:
                    actions += self._answer_elsewhere(invocation, error, [detail], None)
                else:
                    actions.append(error_reply(invocation.caller, CALL, invocation.request, error, detail))
        return actions

    def forget_call(self, caller: Session[PeerT], request: int) -> None:
        """``caller`` no longer waits for its CALL ``request``: forget it, as if the caller had left."""
        invocation = self._by_request.get((caller, request))
        if invocation is not None:
            self._forget(invocation)

    # -- what the other nodes of a cluster tell -----------------------------------------------------

    def registered_elsewhere(self, node: str, procedure: str, registration_id: int) -> None:
        """A callee on ``node`` registered ``procedure``; a callee here keeps it for this node's callers."""
        self.elsewhere[procedure] = (node, registration_id)

    def unregistered_elsewhere(self, node: str, procedure: str) -> None:
        """``node`` no longer has ``procedure``."""
        owner = self.elsewhere.get(procedure)
        if owner is not None and owner[0] == node:
            del self.elsewhere[procedure]

    def call_from_elsewhere(self, node: str, call: RemoteCall) -> list[Action[PeerT]]:
        """
        ``call`` came from ``node`` for a callee here: INVOCATION to it. Without one (it left
        meanwhile), ``node`` is answered ERROR ``wamp.error.no_such_procedure`` at once.
        """
        registration = self._index.get(call.procedure, EXACT)
        if registration is None or not registration.callees:
            if self._elsewhere is not None:
                detail = f"no callee registered procedure {call.procedure!r}"
                answer = RemoteAnswer(self._realm, call.invocation, ApplicationError.NO_SUCH_PROCEDURE, [detail])
                self._elsewhere.answer(node, answer)
            return []
        callee = self._callee(registration)
        invocation: Invocation[PeerT] = Invocation(self._next_id(), None, 0, callee, origin=(node, call.invocation))
        self._in_flight[invocation.id] = invocation
        callee.invocations = with_member(callee.invocations, invocation)
        message = wamp.Invocation(invocation.id, registration.id, args=call.args, kwargs=call.kwargs)
        return [Send(message, (callee,))]

    def answer_from_elsewhere(self, node: str, answer: RemoteAnswer) -> list[Action[PeerT]]:
        """The answer from ``node`` to a call made here: RESULT or ERROR to its caller (if it still waits)."""
        invocation = self._in_flight.get(answer.invocation)
        if invocation is None or invocation.node != node or invocation.caller is None:
            return []
        self._forget(invocation)
        if answer.error is None:
            return [Send(wamp.Result(invocation.request, args=answer.args, kwargs=answer.kwargs), (invocation.caller,))]
        error = wamp.Error(CALL, invocation.request, answer.error, args=answer.args, kwargs=answer.kwargs)
        return [Send(error, (invocation.caller,))]

    def node_lost(self, node: str) -> list[Action[PeerT]]:
        """
        ``node`` is gone: forget its registrations; its calls to callees here are forgotten (their
        answers dropped), and the calls to its callees end with ERROR ``wsserver.error.node_lost``.
        """
        for procedure in [p for p, (owner, _) in self.elsewhere.items() if owner == node]:
            del self.elsewhere[procedure]
        actions: list[Action[PeerT]] = []
        for invocation in [i for i in self._in_flight.values() if node in (i.node, (i.origin or ("",))[0])]:
            self._forget(invocation)
            if invocation.caller is not None:
                detail = f"the node of the callee ({node}) was lost before the callee answered"
                actions.append(error_reply(invocation.caller, CALL, invocation.request, NODE_LOST, detail))
        return actions

    def calls_elsewhere_lost(self, why: str) -> list[Action[PeerT]]:
        """
        The way to the other nodes is cut (their answers would be lost): every call to a callee
        elsewhere ends with ERROR ``wsserver.error.node_lost`` (``why`` its detail), and every
        call from elsewhere is forgotten (the callee's answer is dropped). Registrations stay.
        """
        actions: list[Action[PeerT]] = []
        for invocation in [i for i in self._in_flight.values() if i.node is not None or i.origin is not None]:
            self._forget(invocation)
            if invocation.caller is not None:
                actions.append(error_reply(invocation.caller, CALL, invocation.request, NODE_LOST, why))
        return actions

    # -- helpers ---------------------------------------------------------------------------------

    def _refusal(
        self,
        session: Session[PeerT],
        request: wamp.Register,
        match: str,
        invoke: str,
        registration: Registration[PeerT] | None,
    ) -> tuple[str, str] | None:
        """Why ``session``'s REGISTER is refused, as (error URI, detail), or None; ``registration``: the one it would join."""
        if match not in POLICIES:
            return ApplicationError.INVALID_ARGUMENT, f"match policy {match!r} is not supported for procedures"
        try:
            check_pattern(request.procedure, match)
        except InvalidUriError:
            return ApplicationError.INVALID_URI, f"invalid {match} pattern {request.procedure!r}"
        if invoke not in INVOKE_POLICIES:
            return ApplicationError.INVALID_ARGUMENT, f"invocation policy {invoke!r} is not supported"
        if meta.is_reserved(request.procedure):
            return ApplicationError.INVALID_URI, f"procedure {request.procedure!r} is reserved for the router"
        already = f"procedure {request.procedure!r} is already registered"
        if registration is not None:
            if registration.provider is not None or SINGLE in (invoke, registration.invoke):
                return ApplicationError.PROCEDURE_ALREADY_EXISTS, already
            if invoke != registration.invoke:
                detail = f"{already} with invocation policy {registration.invoke!r}, not {invoke!r}"
                return ApplicationError.PROCEDURE_ALREADY_EXISTS, detail
            if session in registration.callees:
                return ApplicationError.PROCEDURE_ALREADY_EXISTS, f"{already} by this session"
        elif match == EXACT and request.procedure in self.elsewhere:
            return ApplicationError.PROCEDURE_ALREADY_EXISTS, f"{already} on another node"
        return None

    def _callee(self, registration: Registration[PeerT]) -> Session[PeerT]:
        """Which of ``registration``'s callees gets the next call, by its invocation policy."""
        callees = registration.callees
        if registration.invoke == ROUNDROBIN:
            registration.turn += 1
            return callees[(registration.turn - 1) % len(callees)]
        if registration.invoke == RANDOM:
            return callees[self._random_id() % len(callees)]
        return callees[-1] if registration.invoke == LAST else callees[0]

    def _called(self, registration: Registration[PeerT], procedure: str) -> str | None:
        """INVOCATION's ``details.procedure``: the URI called, for a pattern registration (the spec's)."""
        return None if registration.match == EXACT else procedure

    @staticmethod
    def _announced(registration: Registration[PeerT]) -> bool:
        """
        Whether the other nodes of a cluster are told of ``registration``: a single exact one only
        (shared and pattern registrations serve this node's callers only).
        """
        return registration.match == EXACT and registration.invoke == SINGLE

    def _provide(self, provider: Provider[PeerT], caller: Session[PeerT], request: wamp.Call) -> list[Action[PeerT]]:
        return self._reply(caller, request, lambda: provider(caller, list(request.args or ()), dict(request.kwargs or {})))

    def _reply(
        self, caller: Session[PeerT], request: wamp.Call, produce: Callable[[], Reply[PeerT] | Later[PeerT]]
    ) -> list[Action[PeerT]]:
        """RESULT or ERROR for ``caller``'s ``request``, from what ``produce()`` returns or raises."""
        if caller.state is not State.OPEN:  # it left while the store was asked
            return []
        try:
            reply = produce()
            if isinstance(reply, Later):
                return self._ask(caller, request, reply)
        except ApplicationError as error:
            return [error_reply(caller, CALL, request.request, error.error, *error.args, **error.kwargs)]
        result = wamp.Result(request.request, args=reply.args, kwargs=reply.kwargs)
        return [Send(result, (caller,)), *reply.then]

    def _call_elsewhere(
        self, caller: Session[PeerT], request: wamp.Call, node: str, elsewhere: Elsewhere
    ) -> list[Action[PeerT]]:
        """Hand ``request`` to ``node``, whose callee has the procedure; its answer comes back later."""
        invocation: Invocation[PeerT] = Invocation(self._next_id(), caller, request.request, None, node=node)
        self._track(invocation, request.timeout)
        elsewhere.invoke(node, RemoteCall(self._realm, invocation.id, request.procedure, request.args, request.kwargs))
        return []

    def _answer_elsewhere(
        self, invocation: Invocation[PeerT], error: str | None, args: list[Any] | None, kwargs: dict[str, Any] | None
    ) -> list[Action[PeerT]]:
        """Send the answer to a call from another node back to it (nothing to do here)."""
        assert invocation.origin is not None, "only a call from elsewhere has no local caller"
        node, origin_id = invocation.origin
        if self._elsewhere is not None:
            self._elsewhere.answer(node, RemoteAnswer(self._realm, origin_id, error, args, kwargs))
        return []

    def _ask(self, caller: Session[PeerT], request: wamp.Call, later: Later[PeerT]) -> list[Action[PeerT]]:
        """
        Ask the shared store for ``later``, in ``caller``'s turn (see :class:`~wsserver.core.shared.Turns`);
        the wait counts as one of ``caller``'s calls in flight.
        """
        self._calls_made[caller] = self._calls_made.get(caller, 0) + 1

        def answered(answer: Any) -> list[Action[PeerT]]:
            remaining = self._calls_made.pop(caller, 1) - 1
            if caller.state is not State.OPEN:  # gone: forget what it still waits for
                self._turns.forget(caller)
                return []
            if remaining:
                self._calls_made[caller] = remaining
            return self._reply(caller, request, lambda: later.answer(answer))

        return self._turns.ask(caller, later.ask, answered)

    def _answered(self, callee: Session[PeerT], invocation_id: int) -> Invocation[PeerT] | None:
        """The invocation ``callee`` answers, now no longer in flight; None if it is not its to answer."""
        invocation = self._in_flight.get(invocation_id)
        if invocation is None or invocation.callee is not callee:
            return None
        self._forget(invocation)
        return invocation

    def _interrupt(self, invocation: Invocation[PeerT], mode: str, reason: str | None = None) -> list[Action[PeerT]]:
        """INTERRUPT to the callee of ``invocation``, if it is here and announced call canceling."""
        callee = invocation.callee
        if callee is None or not callee.interruptible:
            return []
        return [Send(wamp.Interrupt(invocation.id, mode=mode, reason=reason), (callee,))]

    def _track(self, invocation: Invocation[PeerT], timeout: int | None) -> None:
        """A call from ``invocation.caller`` goes in flight, until ``timeout`` ms pass (None or 0: no timeout)."""
        caller = invocation.caller
        assert caller is not None
        self._in_flight[invocation.id] = invocation
        self._by_request[caller, invocation.request] = invocation
        caller.invocations = with_member(caller.invocations, invocation)
        self._calls_made[caller] = self._calls_made.get(caller, 0) + 1
        if timeout:
            invocation.deadline = self._clock() + timeout / 1000
            heapq.heappush(self._deadlines, (invocation.deadline, invocation.id))
            self._timed += 1

    def _forget(self, invocation: Invocation[PeerT]) -> None:
        del self._in_flight[invocation.id]
        if invocation.deadline is not None:
            self._timed -= 1
            if len(self._deadlines) > 2 * self._timed + DEADLINE_SLACK:
                # Most entries are of calls answered before their timeout: keep the live ones only.
                live = (i for i in self._in_flight.values() if i.deadline is not None)
                self._deadlines = [(cast(float, i.deadline), i.id) for i in live]
                heapq.heapify(self._deadlines)
        caller = invocation.caller
        if caller is not None:
            if self._by_request.get((caller, invocation.request)) is invocation:
                del self._by_request[caller, invocation.request]
            remaining = self._calls_made.pop(caller) - 1
            if remaining:
                self._calls_made[caller] = remaining
            caller.invocations = without_member(caller.invocations, invocation)
        if invocation.callee is not None:
            invocation.callee.invocations = without_member(invocation.callee.invocations, invocation)

    def _add(self, registration: Registration[PeerT]) -> None:
        self._index.add(registration.procedure, registration.match, registration)
        self._by_id[registration.id] = registration

    def _leave(self, session: Session[PeerT], registration: Registration[PeerT]) -> list[Action[PeerT]]:
        """``session`` no longer answers ``registration`` (deleted with its last callee); return the meta events."""
        registration.callees.remove(session)
        session.registrations = without_member(session.registrations, registration)
        deleted = not registration.callees
        if deleted:
            self._index.remove(registration.procedure, registration.match)
            del self._by_id[registration.id]
            if self._elsewhere is not None and self._announced(registration):
                self._elsewhere.unregistered(self._realm, registration.procedure)
        events = meta.REGISTRATION_EVENTS.left(session.id, registration.id, deleted=deleted)
        return [action for topic, args in events for action in self._publish_meta(topic, *args)]
