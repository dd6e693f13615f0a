"""The run manager: the runs' state, kept as the fold of their journalled run records.

Every operation validates, appends one run record to the store (``run_created``,
``step_started``, ``step_extended``, ``step_reported``, ``step_skipped``, ``step_finished``,
``step_activated``, ``address_bound``, ``binding_collision``, ``binding_mismatch``,
``endpoints_assigned``, ``endpoints_released``, ``username_misused``, ``run_deleted``) and
applies it; ``load()`` applies the same records in order after a restart, so the state (and
``view()``) comes back identical. Records carry ``run``, ``step`` where relevant and ``at``
(this manager's clock), so replay never reads the clock.

Side effects live in the operations, never in ``_apply``: kicking the run's connections (step start,
activation), recording collisions, and opening or closing the run's own listeners (through the
``EndpointListeners`` the shell gives it: a run's endpoints are opened before they are journalled,
closed after their release is). Verdicts are computed live from the store's events by the
pure ``mailtls.verdicts.step_verdict``.

Threads: one lock guards the state. The web app may call from worker threads while the event
loop calls ``binder``/``authenticate``; the store calls ``on_record`` from whichever thread
appended, possibly while another thread holds the lock and waits on the store. So ``on_record``
never blocks: it queues the record and handles the queue when the lock is free; whoever releases
the lock handles what was queued meanwhile.

Secrets: the account password and the result-link token are derived from the server key and the
run id when asked for, never stored. Usernames that name no run are reduced to a keyed hash.
Evidence: only a login that presents the run's password (``AuthDecision.proof``, recorded as the
event's ``proof``) activates a step, binds its address or counts as a mismatch; a secret that is
not the run's password with the run's username is journalled as ``username_misused`` (time, step,
whether its connection was bound to the run: never the address), at most ``MAX_MISUSES`` per run.
Must not import ``mailtls.net`` or ``mailtls.web``.
"""

from __future__ import annotations

import base64
import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, Protocol

from mailtls.protocols.base import AuthDecision, Credential
from mailtls.runs import codes
from mailtls.runs.binding import SOURCE_ADDRESS, SOURCE_LOGIN, AddressBinding, BindingTable
from mailtls.runs.endpoints import (
    SOURCE_ENDPOINT,
    EndpointPool,
    EndpointUnavailable,
    PoolExhausted,
    RunEndpoints,
    from_record,
    kinds_for,
)
from mailtls.runs.keys import derive
from mailtls.runs.model import (
    Collision,
    Run,
    RunError,
    RunNotFound,
    RunsRefused,
    Step,
    StepNotFound,
    StepState,
    StepStateError,
    check_protocol,
    make_steps,
    new_run_id,
    resolve_plan,
)
from mailtls.runs.proof import presents
from mailtls.runs.types import Binding
from mailtls.settings import Settings
from mailtls.verdicts import Misuse, StepInfo, StepResult, UserReports, step_verdict

log = logging.getLogger(__name__)

RUN_RECORD_TYPES = (
    "run_created",
    "step_started",
    "step_extended",
    "step_reported",
    "step_skipped",
    "step_finished",
    "step_activated",
    "address_bound",
    "binding_collision",
    "binding_mismatch",
    "username_misused",
    "endpoints_assigned",
    "endpoints_released",
    "run_deleted",
)
MAX_ADDRESSES = 8  # addresses bound per step start
MAX_LOGIN_ADDRESSES = 8  # login addresses remembered per run (newest kept)
MAX_MISUSES = 100  # username_misused records journalled per run (a bot cannot grow it further)
DAY = 86400.0
OPEN_ATTEMPTS = 16  # endpoints tried per run when other programs hold some of the pool

Record = dict[str, Any]
Kicker = Callable[[str, str], object]


class EndpointListeners(Protocol):
    """The shell's side of dedicated endpoints: listening sockets opened and closed per run."""

    def open(self, endpoints: RunEndpoints) -> None:
        """Listen on every endpoint now (sockets bound before it returns); raises
        ``EndpointUnavailable`` naming the first endpoint that cannot be opened."""

    def close(self, run_id: str) -> None: ...


class Store(Protocol):
    """The part of the event store the run manager uses."""

    def append(self, record: dict[str, Any]) -> dict[str, Any]: ...

    def subscribe(self, fn: Callable[[dict[str, Any]], None]) -> Callable[[], None]: ...

    def query(
        self,
        *,
        run: str | None = None,
        step: int | None = None,
        conns: Sequence[Any] | None = None,
        code: str | None = None,
        types: Sequence[str] | None = None,
        after_id: int = 0,
        limit: int | None = None,
    ) -> list[dict[str, Any]]: ...

    def delete_run(self, run_id: str, *, code: str | None = None) -> int: ...

    @property
    def low_space(self) -> bool:
        """Below the data disk's free-space floor (new runs are refused)."""
        ...


def _binding_of(record: Mapping[str, Any]) -> tuple[Any, Any]:
    binding = record.get("binding")
    if isinstance(binding, Mapping):
        return binding.get("run"), binding.get("step")
    return record.get("run"), record.get("step")


class RunManager:
    """Runs, steps and address bindings; the authenticator and binder of the mail servers."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        key: bytes,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._settings = settings
        self._key = key
        self._clock = clock
        self._lock = threading.Lock()  # not reentrant: public methods never call each other
        self._inbox: deque[dict[str, Any]] = deque()
        self._last_login_id = 0
        self._kicker: Kicker | None = None
        self._listeners: EndpointListeners | None = None
        self._reset()

    def _reset(self) -> None:
        self._runs: dict[str, Run] = {}
        self._by_code: dict[str, str] = {}
        self._by_token: dict[str, str] = {}
        self._table = BindingTable(self._settings.binding.ipv6_prefix)
        self._pool = EndpointPool(self._settings)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self._lock:
            yield
        self._drain()

    def _drain(self) -> None:
        """Handle the logins ``on_record`` queued while the lock was taken."""
        while self._inbox:
            if not self._lock.acquire(blocking=False):
                return  # the holder drains when it releases
            try:
                while self._inbox:
                    record = self._inbox.popleft()
                    try:
                        self._handle_login(record)
                    except Exception:  # a callback boundary: log it, keep the queue moving
                        log.exception("run manager failed on event %s", record.get("id"))
            finally:
                self._lock.release()

    def set_kicker(self, fn: Kicker | None) -> None:
        """``fn(run_id, reason)`` closes the run's open connections (activation, step start)."""
        self._kicker = fn

    def set_endpoint_listeners(self, listeners: EndpointListeners | None) -> None:
        """The shell that opens the runs' own listeners; opens those of the runs loaded so far.
        A run whose endpoints cannot be opened again (another program took one meanwhile) gets
        new ones, journalled: its account then shows them."""
        with self._locked():
            self._listeners = listeners
            if listeners is None:
                return
            for endpoints in self._pool.all():
                try:
                    listeners.open(endpoints)
                except OSError as exc:
                    log.warning("run endpoints not reopened (%s): assigning others", exc)
                    self._reassign(endpoints)

    def _reassign(self, old: RunEndpoints) -> None:
        run = self._runs.get(old.run_id)
        self._journal({"type": "endpoints_released", "run": old.run_id, "at": self._clock()})
        if run is None or run.deleted:
            return
        try:
            self._journal_endpoints(self._open_endpoints(run.id, run.protocol))
        except PoolExhausted:
            log.warning("no endpoints left for a reloaded run; it gets new ones at its next step")

    # --- replay ------------------------------------------------------------------------------

    def load(self) -> int:
        """Rebuild all run state from the store's run records; returns how many were applied."""
        records = self._store.query(types=RUN_RECORD_TYPES)
        applied = 0
        with self._locked():
            self._reset()
            for record in records:
                try:
                    self._apply(record)
                except (KeyError, ValueError, TypeError, AttributeError):
                    log.warning("skipping unusable run record %s", record.get("id"))
                    continue
                applied += 1
            unfinished = [(run.id, run.code) for run in self._runs.values() if run.deleted]
        # a finished deletion leaves no record of the run, not even its run_deleted: these were
        # cut short (a crash during the compaction), so finish them now
        for run_id, code in unfinished:
            removed = self._store.delete_run(run_id, code=code)
            log.warning("finished an interrupted deletion of a run: %d records removed", removed)
        return applied

    # --- queries -----------------------------------------------------------------------------

    def get(self, run_id: str) -> Run:
        with self._locked():
            return self._get(run_id)

    def _get(self, run_id: str) -> Run:
        run = self._runs.get(run_id) if isinstance(run_id, str) else None
        if run is None or run.deleted:
            raise RunNotFound(run_id)
        return run

    def password_for(self, run: Run | str) -> str:
        run_id = run.id if isinstance(run, Run) else run
        digest = derive(self._key, "password", run_id)
        return "".join(codes.ALPHABET[b % len(codes.ALPHABET)] for b in digest[:16])

    def result_token(self, run: Run | str) -> str:
        run_id = run.id if isinstance(run, Run) else run
        digest = derive(self._key, "result", run_id)[:24]  # 192 bits
        return base64.urlsafe_b64encode(digest).decode("ascii")

    def find_by_result_token(self, token: str) -> Run | None:
        with self._locked():
            run_id = self._by_token.get(token) if isinstance(token, str) else None
            run = self._runs.get(run_id) if run_id is not None else None
            return None if run is None or run.deleted else run

    def account_username(self, run: Run) -> str:
        return codes.account_username(run.code, self._settings.domain)

    def is_open(self, run: Run, now: float | None = None) -> bool:
        """Whether the run's account may log in: a step still open or within its grace period."""
        now = self._clock() if now is None else now
        if run.deleted or now > run.created + self._settings.retention_days * DAY:
            return False
        return any(s.is_open or (s.expires is not None and s.expires > now) for s in run.steps)

    # --- operations --------------------------------------------------------------------------

    def create_run(
        self,
        steps: Sequence[tuple[str, str]] | None = None,
        plan: str | None = None,
        protocol: str | None = None,
    ) -> Run:
        """Raises ``RunsRefused`` while the data disk is below its free-space floor."""
        specs = resolve_plan(steps, plan)
        protocol = check_protocol(protocol)
        if self._store.low_space:
            raise RunsRefused("the data disk is nearly full; new runs are refused for now")
        with self._locked():
            run_id = new_run_id()
            while run_id in self._runs:
                run_id = new_run_id()
            code = codes.new_code()
            while code in self._by_code:
                code = codes.new_code()
            endpoints = self._open_endpoints(run_id, protocol) if self._pool.enabled else None
            self._journal(
                {
                    "type": "run_created",
                    "run": run_id,
                    "code": code,
                    "protocol": protocol,
                    "steps": [{"scenario": s, "testcase": t} for s, t in specs],
                    "at": self._clock(),
                }
            )
            if endpoints is not None:
                self._journal_endpoints(endpoints)
            return self._runs[run_id]

    def start_step(self, run_id: str, n: int, client_ips: Sequence[str]) -> Step:
        """Activate step ``n`` and bind ``client_ips`` (and the run's login addresses) to it.

        A step already active is re-bound (another of the visitor's addresses); a different
        active step of the run is finished first (it stays bound for the grace period).
        """
        with self._locked():
            run, step = self._step(run_id, n)
            if step.state in (StepState.FINISHED, StepState.SKIPPED):
                raise StepStateError(f"step {n} is {step.state}")
            now = self._clock()
            self._table.prune(now)
            previous = run.active_step()
            if previous is not None and previous is not step:
                self._finish(run, previous, now)
            first = step.state is StepState.PENDING
            if self._pool.enabled and self._pool.of(run.id) is None:
                self._journal_endpoints(self._open_endpoints(run.id, run.protocol))
            exact = self._pool.of(run.id) is not None
            addresses = [] if exact else self._valid_addresses(client_ips)
            collisions = self._journal(
                {
                    "type": "step_started",
                    "run": run.id,
                    "step": n,
                    "at": now,
                    "expires": now + self._settings.binding.ttl_seconds,
                    "addresses": addresses,
                    "binding": SOURCE_ENDPOINT if exact else SOURCE_ADDRESS,
                }
            )
            self._record_collisions(run, step, collisions, now)
            if first:
                self._kick(run.id, "step_started")
            return step

    def extend(self, run_id: str, n: int) -> Step:
        with self._locked():
            run, step = self._step(run_id, n)
            if step.state is not StepState.ACTIVE:
                raise StepStateError(f"step {n} is {step.state}, not active")
            now = self._clock()
            self._journal(
                {
                    "type": "step_extended",
                    "run": run.id,
                    "step": n,
                    "at": now,
                    "expires": now + self._settings.binding.ttl_seconds,
                }
            )
            return step

    def report(self, run_id: str, n: int, prompt_shown: bool, cannot_connect: bool) -> Step:
        if not isinstance(prompt_shown, bool) or not isinstance(cannot_connect, bool):
            raise RunError("prompt_shown and cannot_connect must be true or false")
        with self._locked():
            run, step = self._step(run_id, n)
            if step.state not in (StepState.ACTIVE, StepState.FINISHED):
                raise StepStateError(f"step {n} is {step.state}; start it first")
            self._journal(
                {
                    "type": "step_reported",
                    "run": run.id,
                    "step": n,
                    "at": self._clock(),
                    "prompt_shown": prompt_shown,
                    "cannot_connect": cannot_connect,
                }
            )
            return step

    def skip(self, run_id: str, n: int) -> Step:
        with self._locked():
            run, step = self._step(run_id, n)
            if not step.is_open:
                raise StepStateError(f"step {n} is already {step.state}")
            now = self._clock()
            self._journal(
                {
                    "type": "step_skipped",
                    "run": run.id,
                    "step": n,
                    "at": now,
                    "expires": self._grace_expiry(step, now),
                }
            )
            return step

    def finish(self, run_id: str, n: int) -> StepResult:
        """Finish step ``n`` and return its verdict (an already finished step: its live verdict)."""
        with self._locked():
            run, step = self._step(run_id, n)
            if step.state is StepState.FINISHED:
                return self._result(run, step)
            if step.state is not StepState.ACTIVE:
                raise StepStateError(f"step {n} is {step.state}, not active")
            return self._finish(run, step, self._clock())

    def delete(self, run_id: str) -> int:
        """Delete the run and every record of it; returns how many records the store removed.

        ``mark_deleted`` then ``purge``: the run is gone at once, its records after the
        compaction (which runs outside the lock: mail connections keep being accepted)."""
        return self.purge(*self.mark_deleted(run_id))

    def mark_deleted(self, run_id: str) -> tuple[str, str]:
        """Journal ``run_deleted`` (the run is gone from now on); returns (run id, code) for
        ``purge``. Should the purge fail (or the process die before it), the run stays deleted
        and ``load()`` finishes the deletion at the next start."""
        with self._locked():
            run = self._get(run_id)
            self._journal({"type": "run_deleted", "run": run.id, "at": self._clock()})
            self._close_endpoints(run.id)
            return run.id, run.code

    def purge(self, run_id: str, code: str) -> int:
        """Remove every record of a deleted run (not even ``run_deleted`` stays), every event
        that presented its code and the connections that did; slow: call it from a worker
        thread. Not under the lock: ``binder``/``authenticate`` go on meanwhile."""
        return self._store.delete_run(run_id, code=code)

    # --- the mail servers' side ----------------------------------------------------------------

    def binder(self, client_ip: str, local: tuple[str, int] | None = None) -> Binding | None:
        """What a connection from ``client_ip`` accepted on ``local`` is bound to, if anything."""
        with self._locked():
            now = self._clock()
            endpoint = self._pool.lookup(local)
            if endpoint is not None:
                return self._endpoint_binding(endpoint[0], now)
            if self._pool.enabled:
                return None  # shared ports bind nothing while runs have their own endpoints
            found = self._table.lookup(client_ip, local, now)
            if found is None:
                return None
            run = self._runs.get(found.run_id)
            if run is None or run.deleted or not 1 <= found.step <= len(run.steps):
                return None
            step = run.step(found.step)
            return Binding(
                run_id=run.id,
                step=step.n,
                testcase=step.testcase,
                scenario=step.scenario,
                source=found.source,
                active=step.is_active_attack,
            )

    def _endpoint_binding(self, run_id: str, now: float) -> Binding | None:
        """A run's endpoint serves its current step (the active one, else one in its grace
        period); between steps it serves baseline, bound to the run as step 0 (no verdict)."""
        run = self._runs.get(run_id)
        if run is None or run.deleted:
            return None
        step = self._current_step(run, now)
        if step is None:
            return Binding(run.id, 0, "baseline", "immediate", SOURCE_ENDPOINT, active=False)
        return Binding(
            run_id=run.id,
            step=step.n,
            testcase=step.testcase,
            scenario=step.scenario,
            source=SOURCE_ENDPOINT,
            active=step.is_active_attack,
        )

    def endpoints_of(self, run_id: str) -> RunEndpoints | None:
        with self._locked():
            return self._pool.of(run_id)

    def endpoints_by_label(self, label: str) -> RunEndpoints | None:
        """The endpoints of the run whose host name starts with ``label`` (the DNS responder)."""
        with self._locked():
            return self._pool.by_label(label)

    def release_endpoints(self) -> int:
        """Give back the endpoints of closed runs: every step ended and its grace period over,
        or no step activity for ``endpoints.idle_seconds``. Returns how many runs gave theirs."""
        with self._locked():
            now = self._clock()
            idle = self._settings.endpoints.idle_seconds
            done = [
                e.run_id
                for e in self._pool.all()
                if (run := self._runs.get(e.run_id)) is None
                or not self.is_open(run, now)
                or now - run.last_activity > idle
            ]
            for run_id in done:
                self._journal({"type": "endpoints_released", "run": run_id, "at": now})
                self._close_endpoints(run_id)
            return len(done)

    def authenticate(self, credential: Credential) -> AuthDecision:
        """Only ``test-<CODE>`` of an open run with that run's password may log in.

        The decision names the run (``code``) for its username whatever the secret, and says
        whether the credential is the run's own (``proof``, constant-time): a wrong password
        for a run's username is someone else's login, never the run's evidence. Usernames that
        name no run become keyed hashes.
        """
        code = codes.parse_code(credential.username)
        with self._locked():
            run_id = self._by_code.get(code) if code is not None else None
            run = self._runs.get(run_id) if run_id is not None else None
            if code is not None and run is not None and not run.deleted:
                proof = presents(self.password_for(run), credential)
                return AuthDecision(
                    ok=proof and self.is_open(run),
                    display=self.account_username(run),
                    code=code,
                    proof=proof,
                )
        display = codes.hash_username(self._key, credential.username)
        return AuthDecision(ok=False, display=display, code=None)

    def on_record(self, record: dict[str, Any]) -> None:
        """Subscribed to the store: activation, login-address binding, binding mismatches,
        misuses of the run's username. A username alone (``username_sent``) proves nothing.

        Never blocks (see the module docstring): logins are queued and handled when the lock
        is free.
        """
        if record.get("type") != "auth":
            return
        if not isinstance(record.get("code"), str):
            return
        self._inbox.append(record)
        self._drain()

    def _handle_login(self, record: Mapping[str, Any]) -> None:
        event_id = record.get("id")
        if isinstance(event_id, int):
            if event_id <= self._last_login_id:
                return  # delivered twice (subscribed twice, or replayed)
            self._last_login_id = event_id
        run_id = self._by_code.get(str(record.get("code")))
        run = self._runs.get(run_id) if run_id is not None else None
        if run is None or run.deleted:
            return
        now = self._clock()
        bound_run, bound_step = _binding_of(record)
        if record.get("proof") is False:  # the run's username, not its password
            if record.get("secret_sent"):
                self._note_misuse(run, record, bound_run == run.id, now)
            return
        if bound_run != run.id:
            self._note_mismatch(run, record, now)
        if record.get("type") == "auth" and record.get("outcome") == "success":
            if bound_run == run.id and isinstance(bound_step, int):
                self._maybe_activate(run, bound_step, record, now)
            self._learn_login_address(run, record, now)

    # --- results -------------------------------------------------------------------------------

    def result(self, run_id: str, n: int) -> StepResult:
        """The step's verdict, computed now from its events and the user's reports."""
        with self._locked():
            run, step = self._step(run_id, n)
            return self._result(run, step)

    def _result(self, run: Run, step: Step, state: StepState | None = None) -> StepResult:
        """``state`` overrides the step's state (``finish`` computes the verdict it records)."""
        events = self._store.query(run=run.id, step=step.n)
        if step.mismatches:
            seen = {e.get("id") for e in events}
            conns = sorted({conn for _, conn in step.mismatches}, key=str)
            events += [e for e in self._store.query(conns=conns) if e.get("id") not in seen]
        info = StepInfo(
            run_id=run.id,
            n=step.n,
            scenario=step.scenario,
            testcase=step.testcase,
            state=str(state or step.state),
            code=run.code,
            activated=step.activated is not None,
        )
        return step_verdict(
            info,
            events,
            step.reports,
            loop_connections=self._settings.binding.loop_connections,
            loop_seconds=self._settings.binding.loop_seconds,
            misuses=step.misuses,
        )

    def view(self, run_id: str, base_url: str) -> dict[str, Any]:
        """The run as the JSON API shows it; verdicts computed live."""
        with self._locked():
            run = self._get(run_id)
            return {
                "id": run.id,
                "code": run.code,
                "protocol": run.protocol,
                "created": run.created,
                "account": self._account(run),
                "steps": [self._step_view(run, step) for step in run.steps],
                "links": {
                    "self": f"/api/runs/{run.id}",
                    "result": f"{base_url.rstrip('/')}/r/{self.result_token(run)}",
                },
            }

    def _account(self, run: Run) -> dict[str, Any]:
        endpoints = self._pool.of(run.id)
        return {
            "username": self.account_username(run),
            "password": self.password_for(run),
            "binding": SOURCE_ENDPOINT if endpoints is not None else SOURCE_ADDRESS,
            "servers": endpoints.servers() if endpoints is not None else self.servers(),
        }

    def servers(self) -> dict[str, list[dict[str, Any]]]:
        ports = self._settings.ports
        host = self._settings.hostname
        table = {
            "smtp": [
                (ports.smtp_submission, "starttls"),
                (ports.smtp_tls, "tls"),
                (ports.smtp_mx, "starttls"),
            ],
            "imap": [(ports.imap, "starttls"), (ports.imap_tls, "tls")],
            "pop3": [(ports.pop3, "starttls"), (ports.pop3_tls, "tls")],
        }
        return {
            proto: [{"host": host, "port": p, "security": sec} for p, sec in entries if p]
            for proto, entries in table.items()
        }

    def _step_view(self, run: Run, step: Step) -> dict[str, Any]:
        out: dict[str, Any] = {
            "n": step.n,
            "scenario": step.scenario,
            "testcase": step.testcase,
            "state": str(step.state),
            "binding": step.binding if step.started is not None else None,
            "started": step.started,
            "expires": step.expires,
            "finished": step.finished,
            "activated": step.activated,
            "reports": {
                "prompt_shown": step.reports.prompt_shown,
                "cannot_connect": step.reports.cannot_connect,
            },
            "collisions": [
                {"at": c.at, "role": c.role, "peer": c.peer, "source": c.source}
                for c in step.collisions
            ],
            "username_misused": {
                "count": len(step.misuses),
                "times": sorted(m.at for m in step.misuses),
            },
            "verdict": None,
            "reason": None,
            "findings": [],
            "protocols": {},
        }
        if step.state is StepState.PENDING:
            return out
        result = self._result(run, step).as_dict()
        out["findings"] = result["findings"]
        out["protocols"] = result["protocols"]
        if not step.is_open:
            out["verdict"] = result["verdict"]
            out["reason"] = result["reason"]
        return out

    # --- internals: operations ---------------------------------------------------------------

    def _step(self, run_id: str, n: int) -> tuple[Run, Step]:
        run = self._get(run_id)
        if not isinstance(n, int) or isinstance(n, bool):
            raise StepNotFound(n)
        return run, run.step(n)

    def _valid_addresses(self, client_ips: Sequence[str]) -> list[str]:
        if isinstance(client_ips, str):
            client_ips = [client_ips]
        out: list[str] = []
        keys: set[str] = set()
        for ip in client_ips:
            key = self._table.key(ip) if isinstance(ip, str) else None
            if key is not None and key not in keys:
                keys.add(key)
                out.append(ip.strip())
        return out[:MAX_ADDRESSES]

    def _open_endpoints(self, run_id: str, protocol: str | None) -> RunEndpoints:
        """Plan and open free endpoints for the run; endpoints another program holds are
        blocked and others tried. Raises ``PoolExhausted``: never a shared fall-back."""
        kinds = kinds_for(protocol, self._settings)
        for _ in range(OPEN_ATTEMPTS):
            endpoints = self._pool.plan(run_id, kinds)
            if self._listeners is None:
                return endpoints
            try:
                self._listeners.open(endpoints)
            except EndpointUnavailable as exc:
                log.warning("endpoint pool: %s; trying another", exc)
                self._pool.block(exc.endpoint)
                continue
            return endpoints
        raise PoolExhausted

    def _journal_endpoints(self, endpoints: RunEndpoints) -> None:
        try:
            self._journal(
                {"type": "endpoints_assigned", "run": endpoints.run_id, "at": self._clock()}
                | endpoints.as_record()
            )
        except BaseException:
            self._close_endpoints(endpoints.run_id)
            raise

    def _close_endpoints(self, run_id: str) -> None:
        if self._listeners is not None:
            self._listeners.close(run_id)

    def _grace_expiry(self, step: Step, now: float) -> float | None:
        if step.expires is None:
            return None
        return min(step.expires, now + self._settings.binding.grace_seconds)

    def _finish(self, run: Run, step: Step, now: float) -> StepResult:
        result = self._result(run, step, StepState.FINISHED)
        self._journal(
            {
                "type": "step_finished",
                "run": run.id,
                "step": step.n,
                "at": now,
                "expires": self._grace_expiry(step, now),
                "verdict": str(result.verdict),
                "reason": result.reason,
                "tags": sorted(result.tags()),
            }
        )
        return result

    def _kick(self, run_id: str, reason: str) -> None:
        if self._kicker is not None:
            self._kicker(run_id, reason)

    def _peer_tag(self, run_id: str) -> str:
        return derive(self._key, "peer", run_id).hex()[:12]

    def _record_collisions(
        self, run: Run, step: Step, collisions: list[tuple[AddressBinding, str]], now: float
    ) -> None:
        """Journal ``binding_collision`` for both runs, once per step and other run."""
        for old, source in collisions:
            other = self._runs.get(old.run_id)
            if other is None or other.deleted or not 1 <= old.step <= len(other.steps):
                continue
            other_step = other.step(old.step)
            pairs = (
                (run, step, "took", self._peer_tag(other.id), source),
                (other, other_step, "lost", self._peer_tag(run.id), old.source),
            )
            for who, where, role, peer, src in pairs:
                if any(c.role == role and c.peer == peer for c in where.collisions):
                    continue
                self._journal(
                    {
                        "type": "binding_collision",
                        "run": who.id,
                        "step": where.n,
                        "at": now,
                        "role": role,
                        "peer": peer,
                        "source": src,
                    }
                )

    def _current_step(self, run: Run, now: float) -> Step | None:
        """The active step, else the last ended step still within its grace period."""
        active = run.active_step()
        if active is not None:
            return active
        ended = [
            s
            for s in run.steps
            if not s.is_open and s.expires is not None and s.expires > now and s.finished
        ]
        return max(ended, key=lambda s: s.finished or 0.0, default=None)

    def _note_mismatch(self, run: Run, record: Mapping[str, Any], now: float) -> None:
        step = self._current_step(run, now)
        event_id, conn = record.get("id"), record.get("conn")
        if step is None or not isinstance(event_id, int) or not isinstance(conn, str | int):
            return
        self._journal(
            {
                "type": "binding_mismatch",
                "run": run.id,
                "step": step.n,
                "at": now,
                "event": event_id,
                "event_conn": conn,  # not "conn": this is a run record, not a connection's
            }
        )

    def _note_misuse(self, run: Run, record: Mapping[str, Any], bound: bool, now: float) -> None:
        if sum(len(s.misuses) for s in run.steps) >= MAX_MISUSES:
            return
        step = self._current_step(run, now) or max(
            (s for s in run.steps if s.started is not None),
            key=lambda s: s.started or 0.0,
            default=run.steps[0],
        )
        event_id = record.get("id")
        self._journal(
            {
                "type": "username_misused",
                "run": run.id,
                "step": step.n,
                "at": now,
                "event": event_id if isinstance(event_id, int) else None,
                "protocol": str(record.get("protocol") or ""),
                "tls": record.get("tls") is True,
                "bound": bound,
            }
        )

    def _maybe_activate(self, run: Run, n: int, record: Mapping[str, Any], now: float) -> None:
        if not 1 <= n <= len(run.steps):
            return
        step = run.step(n)
        if (
            step.scenario != "two_phase"
            or step.state is not StepState.ACTIVE
            or step.activated is not None
            or record.get("tls") is not True
        ):
            return
        self._journal(
            {
                "type": "step_activated",
                "run": run.id,
                "step": n,
                "at": now,
                "event": record.get("id"),
            }
        )
        self._kick(run.id, "activated")

    def _learn_login_address(self, run: Run, record: Mapping[str, Any], now: float) -> None:
        if self._pool.enabled:
            return  # exact binding needs no client addresses: none is kept
        address = record.get("client")
        key = self._table.key(address) if isinstance(address, str) else None
        if key is None or not isinstance(address, str):
            return
        known = any(self._table.key(a) == key for a in run.login_addresses)
        step = run.active_step()
        bind_to = None
        if (
            step is not None
            and step.binding == SOURCE_ADDRESS
            and step.expires is not None
            and step.expires > now
            and not self._table.bound_to(address, run.id, step.n, now)
        ):
            bind_to = step
        if known and bind_to is None:
            return
        collisions = self._journal(
            {
                "type": "address_bound",
                "run": run.id,
                "step": bind_to.n if bind_to else None,
                "at": now,
                "address": address,
                "source": SOURCE_LOGIN,
                "expires": bind_to.expires if bind_to else None,
                "event": record.get("id"),
            }
        )
        if bind_to is not None:
            self._record_collisions(run, bind_to, collisions, now)

    # --- internals: applying records (live and on replay) ----------------------------------------

    def _journal(self, record: Record) -> list[tuple[AddressBinding, str]]:
        stored = self._store.append(record)
        return self._apply(stored)

    def _apply(self, record: Mapping[str, Any]) -> list[tuple[AddressBinding, str]]:
        """Fold one run record into the state; returns the bindings of other runs it replaced."""
        kind = record["type"]
        if kind == "run_created":
            self._apply_created(record)
            return []
        run = self._runs.get(record["run"])
        if run is None and kind == "run_deleted":
            return []  # the store removed the run's records with it
        if run is None:
            raise KeyError(record["run"])
        run.last_activity = max(run.last_activity, float(record["at"]))
        if kind == "endpoints_assigned":
            self._pool.assign(from_record(record))
            return []
        if kind == "endpoints_released":
            self._pool.release(run.id)
            return []
        if kind == "run_deleted":
            run.deleted = True
            self._pool.release(run.id)
            self._table.drop_run(run.id)
            self._by_code.pop(run.code, None)
            self._by_token.pop(self.result_token(run), None)
            return []
        at = float(record["at"])
        if kind == "address_bound":
            return self._apply_address(run, record, at)
        step = run.step(int(record["step"]))
        return self._STEP_APPLY[kind](self, run, step, record, at)

    def _apply_created(self, record: Mapping[str, Any]) -> None:
        specs = [(str(s["scenario"]), str(s["testcase"])) for s in record["steps"]]
        run = Run(
            id=str(record["run"]),
            code=str(record["code"]),
            created=float(record["at"]),
            protocol=record.get("protocol"),
            steps=make_steps(specs),
            last_activity=float(record["at"]),
        )
        self._runs[run.id] = run
        self._by_code[run.code] = run.id
        self._by_token[self.result_token(run)] = run.id

    def _apply_address(
        self, run: Run, record: Mapping[str, Any], at: float
    ) -> list[tuple[AddressBinding, str]]:
        address = str(record["address"])
        key = self._table.key(address)
        run.login_addresses = [a for a in run.login_addresses if self._table.key(a) != key]
        run.login_addresses = [*run.login_addresses, address][-MAX_LOGIN_ADDRESSES:]
        n = record.get("step")
        if n is None:
            return []
        return self._bind(run, run.step(int(n)), [address], SOURCE_LOGIN, at, record["expires"])

    def _bind(
        self, run: Run, step: Step, addresses: Sequence[str], source: str, at: float, expires: Any
    ) -> list[tuple[AddressBinding, str]]:
        collisions = []
        for address in addresses:
            try:
                old = self._table.bind(address, run.id, step.n, source, at, float(expires))
            except ValueError:
                continue
            if old is not None:
                collisions.append((old, source))
        return collisions

    def _apply_started(
        self, run: Run, step: Step, record: Mapping[str, Any], at: float
    ) -> list[tuple[AddressBinding, str]]:
        step.state = StepState.ACTIVE
        step.started = step.started if step.started is not None else at
        step.expires = float(record["expires"])
        step.binding = str(record.get("binding", SOURCE_ADDRESS))
        if step.binding == SOURCE_ENDPOINT:
            return []
        # the run's login addresses as known at this point of the journal (live and on replay)
        collisions = self._bind(run, step, run.login_addresses, SOURCE_LOGIN, at, step.expires)
        collisions += self._bind(run, step, record["addresses"], SOURCE_ADDRESS, at, step.expires)
        self._table.set_expiry(run.id, step.n, step.expires, only_earlier=False)
        return collisions

    def _apply_extended(
        self, run: Run, step: Step, record: Mapping[str, Any], at: float
    ) -> list[tuple[AddressBinding, str]]:
        step.expires = float(record["expires"])
        self._table.set_expiry(run.id, step.n, step.expires, only_earlier=False)
        return []

    def _apply_ended(
        self, run: Run, step: Step, record: Mapping[str, Any], at: float
    ) -> list[tuple[AddressBinding, str]]:
        finished = record["type"] == "step_finished"
        step.state = StepState.FINISHED if finished else StepState.SKIPPED
        step.finished = at
        expires = record.get("expires")
        step.expires = None if expires is None else float(expires)
        if step.expires is not None:
            self._table.set_expiry(run.id, step.n, step.expires, only_earlier=True)
        return []

    def _apply_reported(
        self, run: Run, step: Step, record: Mapping[str, Any], at: float
    ) -> list[tuple[AddressBinding, str]]:
        step.reports = UserReports(
            prompt_shown=bool(record["prompt_shown"]),
            cannot_connect=bool(record["cannot_connect"]),
            record_id=record.get("id"),
        )
        return []

    def _apply_activated(
        self, run: Run, step: Step, record: Mapping[str, Any], at: float
    ) -> list[tuple[AddressBinding, str]]:
        step.activated = at
        return []

    def _apply_collision(
        self, run: Run, step: Step, record: Mapping[str, Any], at: float
    ) -> list[tuple[AddressBinding, str]]:
        step.collisions.append(
            Collision(at, str(record["role"]), str(record["peer"]), str(record["source"]))
        )
        return []

    def _apply_mismatch(
        self, run: Run, step: Step, record: Mapping[str, Any], at: float
    ) -> list[tuple[AddressBinding, str]]:
        step.mismatches.append((int(record["event"]), record["event_conn"]))
        return []

    def _apply_misused(
        self, run: Run, step: Step, record: Mapping[str, Any], at: float
    ) -> list[tuple[AddressBinding, str]]:
        event = record.get("event")
        step.misuses.append(
            Misuse(at, event if isinstance(event, int) else None, record.get("bound") is True)
        )
        return []

    _STEP_APPLY: Mapping[
        str,
        Callable[
            [RunManager, Run, Step, Mapping[str, Any], float], list[tuple[AddressBinding, str]]
        ],
    ] = {
        "step_started": _apply_started,
        "step_extended": _apply_extended,
        "step_skipped": _apply_ended,
        "step_finished": _apply_ended,
        "step_reported": _apply_reported,
        "step_activated": _apply_activated,
        "binding_collision": _apply_collision,
        "binding_mismatch": _apply_mismatch,
        "username_misused": _apply_misused,
    }
