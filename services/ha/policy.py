"""What one node does with one service: a pure function of (state, event) -> (state, actions).

No I/O, no clock, no asyncio: the supervisor (`supervisor.py`) feeds it lock events, the results
of the work it ran (start, stop, status check) and commands, and executes the actions it returns,
in order. The golden-case tests (`tests/unit/test_ha_policy.py`) replay event sequences through
it and compare the traces, like Pacemaker's scheduler regression tests.

Phases of a service on this node::

    IDLE ──start──> WAITING ──granted──> STARTING ──ok──> RUNNING ──check fails N times──┐
     ^  (stopped or    │ (Acquire sent,     │ (stores, fips,   │ (status every           │
     │   released)     │  queued)           │  script start)   │  check_interval)        v
     │                 │                    └──fails──> STOPPING(then=fail) ──> FAILED   │
     └──stop/release───┘                                STOPPING(then=requeue) <─────────┘
                                                           └──> release lock, Acquire again: WAITING
    RUNNING ──stop──> STOPPING(then=keep) ──> HELD (stopped here, lock kept: nobody takes over)
    RUNNING ──release──> STOPPING(then=release) ──> IDLE (released; the next waiter takes over)
    RUNNING ──switch──> STOPPING(then=requeue) ──> WAITING (the next waiter takes over)
    STARTING/RUNNING ──lock lost──> STOPPING(urgent, then=requeue): floating IPs down first

Failures of a run: `check_failures` failed status checks in a row, or at once the death of the
pidfile's process or missed user pulses (`Failed`). With `restarts` > 0 the service is first
restarted here, keeping its lock (STOPPING(then=restart) -> STARTING), that many times; then it is
switched: stopped, released, and this node queues again only after a back-off (`backoff_s`,
doubling per failure in a row here up to `backoff_max_s`), so a service that fails everywhere
does not ping-pong between nodes. A run that lasted `stable_s` resets both counts.

Refusing new services (emon's `refuse_new` watermark, `Refuse`): a waiting node leaves the lock
queue and does not queue again (nor for a start command) until the refusal ends; what runs here
keeps running.

Maintenance (`Maintenance`, Pacemaker's maintenance mode): the node leaves every lock queue and
its services become *unmanaged*: nothing is started, stopped or moved here by the HA daemon
(no status checks; a failure is shown, not acted on; commands are refused), so the daemon
itself can be restarted or upgraded (it leaves without stopping them and adopts them again,
still unmanaged). Safety stays: a lost lock or a passed ownership deadline still stops the
service here (another node may be granted it). When maintenance ends every running service is
checked at once and waiting ones queue again.

Failure expiry (`failure_timeout_s`, Pacemaker's failure-timeout): a service whose start failed
here stays FAILED until a start command, or, with a failure timeout, until that much time has
passed: then its failures are forgotten and it queues again (`FailureExpired`).

A stop that fails leaves the service FAILED *holding its lock* (when it still has it), so that no
other node starts it while its resources may still be in use here; a stop or release command
retries the stop; with `force_reboot` the node reboots (`Reboot`), which frees the resources
and the lock for sure. A failed start is cleaned up (full stop) and its lock released without
queueing again: the next waiter takes over, and this node stays FAILED until a start command.

Commands (the seed's `ha_svc_commander -a`), by phase; "refused" means FAILED_PRECONDITION with
the message, "-" means nothing to do (answered with the current state):

=========  ============  ===============  ===============  ==========  ===============
command    IDLE/FAILED*  WAITING          STARTING/RUNNING HELD        STOPPING
=========  ============  ===============  ===============  ==========  ===============
start      Acquire       -                -                start here  refused
stop       - (stopped)   leave the queue  stop, keep lock  -           then = keep
release    - (released)  leave the queue  stop, release    release     then = release
switch     refused       refused          stop, release,   release,    refused
                                          queue again      queue again
remove     forget        refused          refused          release,    refused
                                                           forget
=========  ============  ===============  ===============  ==========  ===============

(*) FAILED while still holding the lock (its stop failed): start and remove are refused; stop and
release retry the stop. `stopall` (phase 2 of Ha.StopAll) stops, releases and ends IDLE (stopped);
`unqueue` (phase 1) only leaves the lock queue.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, replace

__all__ = [
    "ACTIVE_PHASES",
    "COMMANDS",
    "MAINTENANCE_REFUSAL",
    "RETRY_S",
    "Acquire",
    "AcquireFailed",
    "Adopted",
    "CancelCheck",
    "CancelStart",
    "CheckDone",
    "Command",
    "Decision",
    "ExpireFailureLater",
    "Expired",
    "Failed",
    "FailureExpired",
    "Forget",
    "Granted",
    "Isolated",
    "Lost",
    "Maintenance",
    "Phase",
    "Queued",
    "Reboot",
    "Refuse",
    "Release",
    "Released",
    "RetryAcquire",
    "ScheduleCheck",
    "ScheduleRetry",
    "SessionDown",
    "Settings",
    "Start",
    "StartDone",
    "State",
    "Stop",
    "StopDone",
    "Then",
    "active",
    "backoff_delay",
    "decide",
    "settled",
]

#: seconds between two Acquire attempts while the lock cannot be asked for (no quorum, lock
#: daemon unreachable)
RETRY_S = 0.5
COMMANDS = ("start", "stop", "release", "switch", "remove", "stopall", "unqueue")
MAINTENANCE_REFUSAL = ("this node is in maintenance: the HA daemon starts, stops and moves "
                       "nothing here until `skyge ha maintenance off`")


class Phase(enum.Enum):
    IDLE = "idle"          # not competing for the lock (state "stopped" or "released")
    WAITING = "waiting"    # asked for the lock (or will again, after a retry delay)
    STARTING = "starting"  # holds the lock; bringing the service up
    RUNNING = "running"    # up; status checked every check_interval
    STOPPING = "stopping"  # bringing it down; `then` says what follows
    HELD = "held"          # stopped by command, lock kept: nobody takes over
    FAILED = "failed"      # a start or a stop failed; `holding` says whether the lock is kept


class Then(enum.Enum):
    """What follows a stop that succeeded."""

    KEEP = "keep"          # keep the lock: HELD (IDLE if the lock was lost meanwhile)
    RELEASE = "release"    # release the lock: IDLE (released)
    STOP = "stop"          # release the lock: IDLE (stopped)  [stopall]
    REQUEUE = "requeue"    # release the lock and ask again: WAITING (after `backoff` if set)
    RESTART = "restart"    # start again here with the same lock: STARTING
    FAIL = "fail"          # release the lock: FAILED (a failed start was cleaned up)


@dataclass(frozen=True)
class Settings:
    """What the policy needs of a service.cfg."""

    check_interval_s: float = 3.0
    check_failures: int = 1
    #: local restarts before switching away
    restarts: int = 0
    #: first back-off before queueing again after a failure here (0: at once), then doubling
    backoff_s: float = 0.0
    backoff_max_s: float = 60.0
    #: a run lasting this long forgets earlier failures (restarts used, back-off streak)
    stable_s: float = 60.0
    #: reboot the node when a stop fails
    force_reboot: bool = False
    #: a failed start is forgotten after this long (queue again); 0: only a start command
    failure_timeout_s: float = 0.0


@dataclass(frozen=True)
class State:
    phase: Phase = Phase.IDLE
    #: IDLE flavour: True after release (state RELEASED), False after stop (state STOPPED)
    released: bool = False
    #: the lock is ours (granted, neither released nor lost)
    holding: bool = False
    #: fencing token of the current hold (kept after it ends, for the log)
    token: int = 0
    #: an Acquire is outstanding (sent; neither granted, failed nor cancelled)
    acquiring: bool = False
    #: the lock daemon answered the outstanding Acquire (queued)
    queued: bool = False
    #: a Release is outstanding
    releasing: bool = False
    #: STOPPING: what follows
    then: Then | None = None
    #: number of the current run (each start +1): stale check results are ignored
    run: int = 0
    failed_checks: int = 0
    fail_count: int = 0
    reason: str = "added"
    #: STOPPING: why, in a few words (e.g. "switch by command"), for the reasons that follow
    cause: str = ""
    #: local restarts used since the last stable run
    restarts_used: int = 0
    #: failures in a row here that switched the service away (sets the back-off)
    streak: int = 0
    #: STOPPING(then=requeue): wait this long before queueing again
    backoff_s: float = 0.0
    #: WAITING but out of the queue until RetryAcquire (back-off after a failure)
    backing_off: bool = False
    #: new services refused on this node (emon): do not queue
    refusing: bool = False
    #: the node is in maintenance: no start, stop, check or queueing by the HA daemon
    unmanaged: bool = False

    @property
    def state_name(self) -> str:
        """The ServiceState this maps to: stopped, released, waiting, starting, running,
        stopping or failed."""
        name = self.phase.value  # (read before the checks narrow `phase`: mypy types it here)
        if self.phase is Phase.IDLE:
            return "released" if self.released else "stopped"
        if self.phase is Phase.HELD:
            return "stopped"
        return name


# --- events -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Command:
    action: str  # one of COMMANDS


@dataclass(frozen=True)
class Granted:
    token: int


@dataclass(frozen=True)
class Queued:
    position: int = 0


@dataclass(frozen=True)
class AcquireFailed:
    reason: str  # "no_quorum", "timeout", "busy", "invalid"
    detail: str = ""


@dataclass(frozen=True)
class Released:
    pass


@dataclass(frozen=True)
class Lost:
    reason: str  # "no_quorum", "node_left", "authority_change"
    detail: str = ""


@dataclass(frozen=True)
class Expired:
    """The lock's ownership deadline passed with no renewal (the deadman fired, or a start found
    it past): stop at once. Unlike `Lost`, the lock daemon may still count the hold (it was
    frozen, or its renewal is late), so the lock is released before this node queues again."""

    detail: str = ""


@dataclass(frozen=True)
class SessionDown:
    """The lock session ended (lock daemon stopped or unreachable): holds and waits are gone."""

    detail: str = ""


@dataclass(frozen=True)
class StartDone:
    ok: bool
    reason: str = ""
    #: failed only because another host still answers for a floating IP (a node frozen or cut
    #: off with its copy up): not this node's failure, so it queues again rather than FAILED
    address_taken: bool = False


@dataclass(frozen=True)
class StopDone:
    ok: bool
    reason: str = ""


@dataclass(frozen=True)
class CheckDone:
    run: int
    ok: bool
    reason: str = ""
    #: how long the run had been up, s
    uptime_s: float = 0.0


@dataclass(frozen=True)
class Failed:
    """The run failed outright: its main process died (pidfile) or its pulses stopped."""

    run: int
    reason: str
    #: how long the run had been up, s (a stable run forgets earlier failures)
    uptime_s: float = 0.0


@dataclass(frozen=True)
class RetryAcquire:
    pass


@dataclass(frozen=True)
class Refuse:
    """Refuse new services on this node (on), or take them again (off)."""

    on: bool
    reason: str = ""


@dataclass(frozen=True)
class Maintenance:
    """The node enters maintenance (on) or leaves it (off)."""

    on: bool


@dataclass(frozen=True)
class FailureExpired:
    """`failure_timeout_s` passed since run `run` failed to start here."""

    run: int


@dataclass(frozen=True)
class Isolated:
    """This node lost every peer and reaches no reference IP: stop at once (floating IPs
    first), release, and wait for the lock again (granted only when back in a quorum)."""

    detail: str = ""


@dataclass(frozen=True)
class Adopted:
    """The lock daemon kept this service's hold while the HA daemon was down (it crashed or
    was killed) and handed it to the new session: take the service over again where it runs
    (HELD instead when this node had stopped it by command, keeping the lock)."""

    token: int
    held: bool = False


Event = (Command | Granted | Queued | AcquireFailed | Released | Lost | Expired | SessionDown |
         StartDone | StopDone | CheckDone | Failed | RetryAcquire | Refuse | Isolated | Adopted |
         Maintenance | FailureExpired)


# --- actions ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Acquire:
    """Ask for the lock (opening the session first if needed)."""


@dataclass(frozen=True)
class Release:
    """Give the lock back, or cancel the wait."""


@dataclass(frozen=True)
class Start:
    """Mount the stores, add the floating IPs (+ gratuitous ARP), run `script start`; then
    report StartDone. `adopt`: the service may still run from before an HA daemon restart:
    bring up only what is missing and run `script start` only if `script status` fails;
    `unmanaged` (adopted in maintenance): bring up nothing, only watch it again."""

    token: int
    run: int
    adopt: bool = False
    unmanaged: bool = False


@dataclass(frozen=True)
class CancelStart:
    """Abort a start in progress (its script's process group is killed)."""


@dataclass(frozen=True)
class Stop:
    """Run `script stop`, remove the floating IPs, unmount the stores (urgent: floating IPs
    first, the lock is already gone); then report StopDone."""

    urgent: bool = False


@dataclass(frozen=True)
class ScheduleCheck:
    """Run `script status` (and check the floating IPs and mounts) after `delay_s`; report
    CheckDone(run)."""

    run: int
    delay_s: float


@dataclass(frozen=True)
class CancelCheck:
    """Drop a scheduled or running status check."""


@dataclass(frozen=True)
class ScheduleRetry:
    """Post RetryAcquire after `delay_s`."""

    delay_s: float


@dataclass(frozen=True)
class ExpireFailureLater:
    """Post FailureExpired(run) after `delay_s`."""

    run: int
    delay_s: float


@dataclass(frozen=True)
class Forget:
    """Remove the service from this node (close its lock session)."""


@dataclass(frozen=True)
class Reboot:
    """Reboot this node now (force_reboot after a failed stop)."""

    reason: str


Action = (Acquire | Release | Start | CancelStart | Stop | ScheduleCheck | CancelCheck |
          ScheduleRetry | ExpireFailureLater | Forget | Reboot)


@dataclass(frozen=True)
class Decision:
    state: State
    actions: tuple[Action, ...] = ()
    #: a command that does not apply: why (FAILED_PRECONDITION); None when accepted
    refused: str | None = None
    #: what a command did, for its reply
    message: str = ""
    #: the event was ignored (stale or unexpected, nothing changed)
    ignored: bool = False


#: phases in which the service's resources may be in use on this node
ACTIVE_PHASES = (Phase.STARTING, Phase.RUNNING, Phase.STOPPING)


def active(state: State) -> bool:
    """This node holds the lock, or starts, runs or stops the service."""
    return state.holding or state.phase in ACTIVE_PHASES


def settled(state: State) -> bool:
    """No work or lock request in flight: a command's reply can be sent."""
    if state.phase in (Phase.STARTING, Phase.STOPPING) or state.releasing:
        return False
    return not (state.phase is Phase.WAITING and state.acquiring and not state.queued)


# --- the policy ---------------------------------------------------------------------------------
def _acquire(state: State, reason: str) -> tuple[State, tuple[Action, ...]]:
    """To WAITING, asking for the lock (unless new services are refused here or the node is in
    maintenance: then WAITING out of the queue until that ends)."""
    new = replace(state, phase=Phase.WAITING, acquiring=True, queued=False, released=False,
                  then=None, failed_checks=0, backing_off=False, reason=reason)
    if new.unmanaged:
        return replace(new, acquiring=False, reason=f"{reason} (maintenance: not queued until "
                                                    f"it ends)"), ()
    if new.refusing:
        return replace(new, acquiring=False, reason=f"{reason} (new services refused here: "
                                                    f"not queued until accepted)"), ()
    return new, (Acquire(),)


def backoff_delay(s: Settings, streak: int) -> float:
    """Seconds to wait before queueing again after the `streak`-th failure in a row here."""
    if s.backoff_s <= 0 or streak <= 0:
        return 0.0
    return min(s.backoff_s * 2.0 ** min(streak - 1, 30), max(s.backoff_max_s, s.backoff_s))


def _fail_run(state: State, s: Settings, what: str, detail: str, uptime_s: float) -> Decision:
    """A run failed: restart here while restarts are left, else switch away (with back-off)."""
    if uptime_s >= s.stable_s:
        state = replace(state, restarts_used=0, streak=0)
    state = replace(state, fail_count=state.fail_count + 1)
    if state.restarts_used < s.restarts:
        used = state.restarts_used + 1
        new, acts = _stop(replace(state, restarts_used=used), Then.RESTART,
                          f"{what}: restart {used} of {s.restarts} here", detail)
        return Decision(new, acts)
    streak = state.streak + 1
    new, acts = _stop(replace(state, streak=streak, backoff_s=backoff_delay(s, streak)),
                      Then.REQUEUE, what, detail)
    return Decision(new, acts)


def _stop(state: State, then: Then, cause: str, detail: str = "", *, urgent: bool = False,
          cancel: bool = True) -> tuple[State, tuple[Action, ...]]:
    """To STOPPING (from STARTING, RUNNING or a FAILED stop)."""
    actions: list[Action] = []
    if state.phase is Phase.STARTING and cancel:
        actions.append(CancelStart())
    if state.phase is Phase.RUNNING:
        actions.append(CancelCheck())
    actions.append(Stop(urgent=urgent))
    reason = f"{cause}{': ' + detail if detail else ''}: stopping"
    return (replace(state, phase=Phase.STOPPING, then=then, cause=cause, reason=reason),
            tuple(actions))


def _leave_queue(state: State, released: bool, reason: str) -> tuple[State, tuple[Action, ...]]:
    return (replace(state, phase=Phase.IDLE, released=released, acquiring=False, queued=False,
                    releasing=True, reason=reason), (Release(),))


def _command(state: State, action: str, s: Settings) -> Decision:
    phase = state.phase
    # FAILED without the lock behaves like IDLE (nothing runs here)
    idle = phase is Phase.IDLE or (phase is Phase.FAILED and not state.holding)
    busy_stopping = "it is stopping here; try again when it has stopped"
    if action == "start":
        if idle:
            new, acts = _acquire(state, "started by command: waiting for the lock")
            return Decision(new, acts, message="started: waiting for the lock")
        if phase is Phase.HELD:
            run = state.run + 1
            return Decision(replace(state, phase=Phase.STARTING, run=run, failed_checks=0,
                                    reason=f"started again by command (lock kept, token "
                                           f"{state.token})"),
                            (Start(state.token, run),), message="starting again here")
        if phase in (Phase.WAITING, Phase.STARTING, Phase.RUNNING):
            return Decision(state, message=f"already {state.state_name} here")
        if phase is Phase.STOPPING:
            return Decision(state, refused=busy_stopping)
        return Decision(state, refused="its last stop failed and it still holds the lock here: "
                                       "stop or release it first (that retries the stop)")
    if action in ("stop", "release", "stopall", "unqueue"):
        released = action == "release"
        word = {"stop": "stopped", "release": "released", "stopall": "stopped",
                "unqueue": "stopped"}[action]
        if action == "unqueue" and phase is not Phase.WAITING:
            return Decision(state, message="not waiting")
        if idle:
            if phase is Phase.FAILED or (state.released != released and action != "stopall"):
                return Decision(replace(state, phase=Phase.IDLE, released=released,
                                        reason=f"{word} by command"), message=word)
            return Decision(state, message=f"already {state.state_name}")
        if phase is Phase.WAITING:
            new, acts = _leave_queue(state, released, f"{word} by command (left the lock queue)")
            return Decision(new, acts, message=f"{word}: left the lock queue")
        then = {"stop": Then.KEEP, "release": Then.RELEASE, "stopall": Then.STOP}[action]
        if phase in (Phase.STARTING, Phase.RUNNING) or (phase is Phase.FAILED and state.holding):
            new, acts = _stop(state, then, f"{word} by command")
            return Decision(new, acts, message=f"{word}")
        if phase is Phase.STOPPING:
            return Decision(replace(state, then=then), message=f"stopping; then {then.value}")
        # HELD
        if action == "stop":
            return Decision(state, message="already stopped (lock kept)")
        return Decision(replace(state, phase=Phase.IDLE, released=released, holding=False,
                                releasing=True, reason=f"{word} by command (lock released)"),
                        (Release(),), message=f"{word}: lock released")
    if action == "switch":
        if phase in (Phase.STARTING, Phase.RUNNING):
            new, acts = _stop(state, Then.REQUEUE, "switch by command")
            return Decision(new, acts, message="switching to the next waiter")
        if phase is Phase.HELD:
            new, acts = _acquire(replace(state, holding=False, releasing=True),
                                 "switch by command: lock released, queued again")
            return Decision(new, (Release(), *acts), message="switching to the next waiter")
        return Decision(state, refused=f"it does not run here ({state.state_name})")
    if action == "remove":
        if idle:
            return Decision(state, (Forget(),), message="removed")
        if phase is Phase.HELD:
            return Decision(replace(state, phase=Phase.IDLE, holding=False, releasing=True,
                                    reason="removed (lock released)"), (Release(), Forget()),
                            message="removed: lock released (a waiting node takes over)")
        if phase is Phase.WAITING:
            return Decision(state, refused="it waits for the lock here: release it first "
                                           "(-a release), then remove it")
        if phase is Phase.STOPPING:
            return Decision(state, refused=busy_stopping)
        if phase is Phase.FAILED:
            return Decision(state, refused="its last stop failed and it still holds the lock "
                                           "here: stop or release it first")
        return Decision(state, refused=f"it is {state.state_name} here: stop or release it "
                                       f"first (-a stop / -a release), then remove it")
    raise ValueError(f"unknown command {action!r} (one of {', '.join(COMMANDS)})")


def _after_stop(state: State, ok: bool, reason: str, s: Settings) -> Decision:
    if not ok:
        if s.force_reboot:
            why = f"stop failed: {reason}; force_reboot: rebooting the node"
            return Decision(replace(state, phase=Phase.FAILED, then=None, reason=why),
                            (Reboot(why),))
        if state.holding:
            why = (f"stop failed: {reason}; it keeps the lock so that no other node starts it "
                   f"while its resources may be in use here (stop or release retries)")
        else:
            why = f"stop failed after the lock was lost: {reason}"
        return Decision(replace(state, phase=Phase.FAILED, then=None, reason=why))
    then = state.then or Then.KEEP
    release: tuple[Action, ...] = (Release(),) if state.holding else ()
    done = replace(state, then=None, failed_checks=0)  # whatever follows
    if then is Then.KEEP:
        if state.holding:
            return Decision(replace(done, phase=Phase.HELD, reason="stopped (lock kept: nobody "
                                                                   "takes over)"))
        return Decision(replace(done, phase=Phase.IDLE, released=False,
                                reason="stopped (the lock was lost meanwhile)"))
    if then in (Then.RELEASE, Then.STOP):
        return Decision(replace(done, phase=Phase.IDLE, released=then is Then.RELEASE,
                                holding=False, releasing=bool(release),
                                reason=f"{'released' if then is Then.RELEASE else 'stopped'}: "
                                       f"lock given back"), release)
    if then is Then.FAIL:
        expiry: tuple[Action, ...] = ((ExpireFailureLater(state.run, s.failure_timeout_s),)
                                      if s.failure_timeout_s > 0 else ())
        return Decision(replace(done, phase=Phase.FAILED, holding=False,
                                releasing=bool(release),
                                reason=state.reason.removesuffix(": stopping") +
                                "; cleaned up, lock given back"), (*release, *expiry))
    if then is Then.RESTART and state.holding:
        run = state.run + 1
        return Decision(replace(done, phase=Phase.STARTING, run=run, reason=f"{state.cause}: "
                                f"starting again (token {state.token})"),
                        (Start(state.token, run),))
    # REQUEUE (or a restart whose lock was lost meanwhile)
    delay = state.backoff_s
    if delay > 0:
        return Decision(replace(done, phase=Phase.WAITING, holding=False, acquiring=False,
                                queued=False, backing_off=True, backoff_s=0.0,
                                releasing=bool(release) or state.releasing,
                                reason=f"{state.cause or 'stopped'}: stopped here; queueing "
                                       f"again in {delay:g} s (back-off)"),
                        (*release, ScheduleRetry(delay)))
    new, acts = _acquire(replace(done, holding=False, releasing=bool(release) or state.releasing),
                         f"{state.cause or 'stopped'}: stopped here, waiting for the lock again")
    return Decision(new, (*release, *acts))


def decide(state: State, event: Event, s: Settings = Settings()) -> Decision:
    """The next state and the actions to run, in order (see the module doc)."""
    phase = state.phase
    if isinstance(event, Command):
        if state.unmanaged:
            return Decision(state, refused=MAINTENANCE_REFUSAL)
        return _command(state, event.action, s)

    if isinstance(event, Maintenance):
        return _maintenance(state, event.on)

    if isinstance(event, Granted):
        if phase is Phase.WAITING and state.acquiring:  # (a Release sent before it is done)
            run = state.run + 1
            return Decision(replace(state, phase=Phase.STARTING, holding=True, acquiring=False,
                                    queued=False, token=event.token, run=run, failed_checks=0,
                                    reason=f"lock granted (token {event.token}): starting"),
                            (Start(event.token, run),))
        if state.holding:  # never give up a hold on a duplicate
            return Decision(state, ignored=True)
        if state.releasing:  # the Release in flight gives it back
            return Decision(replace(state, holding=True, acquiring=False), ignored=True)
        return Decision(replace(state, acquiring=False, releasing=True, holding=True),
                        (Release(),), ignored=True)  # not wanted here

    if isinstance(event, Queued):
        if phase is Phase.WAITING and state.acquiring:
            where = f" (position {event.position})" if event.position else ""
            return Decision(replace(state, queued=True,
                                    reason=f"waiting for the lock{where}"))
        return Decision(state, ignored=True)

    if isinstance(event, AcquireFailed):
        if phase is not Phase.WAITING or not state.acquiring:
            return Decision(replace(state, acquiring=False, queued=False), ignored=True)
        if event.reason == "invalid":
            return Decision(replace(state, phase=Phase.FAILED, acquiring=False, queued=False,
                                    reason=f"the lock refused the request: {event.detail}"))
        why = {"no_quorum": "no quorum: the lock cannot be granted now",
               "timeout": "lock wait timed out", "busy": "lock busy"}.get(event.reason,
                                                                         event.reason)
        return Decision(replace(state, acquiring=False, queued=True,
                                reason=f"{why}; asking again"), (ScheduleRetry(RETRY_S),))

    if isinstance(event, Released):
        return Decision(replace(state, releasing=False,
                                holding=state.holding and state.phase not in (
                                    Phase.IDLE, Phase.WAITING, Phase.FAILED)))

    if isinstance(event, Expired):
        if state.holding and phase in (Phase.STARTING, Phase.RUNNING):
            new, acts = _stop(state, Then.REQUEUE, "ownership deadline passed", event.detail,
                              urgent=True)
            return Decision(new, acts)
        return Decision(state, ignored=True)

    if isinstance(event, (Lost, SessionDown)):
        if isinstance(event, Lost):
            detail = f": {event.detail}" if event.detail else ""
            why = f"lock lost ({event.reason.replace('_', ' ')}{detail})"
        else:
            why = f"lock session ended ({event.detail or 'lock daemon unreachable'})"
        base = replace(state, holding=False)
        if isinstance(event, SessionDown):  # every hold and wait of the session is gone
            base = replace(base, acquiring=False, queued=False, releasing=False)
        if not state.holding:
            if isinstance(event, SessionDown) and phase is Phase.WAITING:
                return Decision(replace(base, queued=True, reason=f"{why}; asking again"),
                                (ScheduleRetry(RETRY_S),))
            return Decision(base, ignored=isinstance(event, Lost))
        if phase in (Phase.STARTING, Phase.RUNNING):
            new, acts = _stop(base, Then.REQUEUE, why, urgent=True)
            return Decision(new, acts)
        if phase is Phase.HELD:
            return Decision(replace(base, phase=Phase.IDLE, released=False,
                                    reason=f"{why} while stopped"))
        return Decision(replace(base, reason=f"{state.reason}; {why}"))  # STOPPING, FAILED

    if isinstance(event, StartDone):
        if phase is not Phase.STARTING:
            return Decision(state, ignored=True)
        if event.ok:
            running = replace(state, phase=Phase.RUNNING, failed_checks=0,
                              reason=f"running (token {state.token})")
            if state.unmanaged:
                return Decision(replace(running, reason=f"running, unmanaged (maintenance; "
                                                        f"{event.reason or 'started'})"))
            return Decision(running, (ScheduleCheck(state.run, s.check_interval_s),))
        if event.address_taken:
            streak = state.streak + 1
            new, acts = _stop(replace(state, streak=streak, backoff_s=backoff_delay(s, streak)),
                              Then.REQUEUE, "floating IP held by another host", event.reason,
                              cancel=False)
            return Decision(new, acts)
        new, acts = _stop(replace(state, fail_count=state.fail_count + 1), Then.FAIL,
                          "start failed", event.reason, cancel=False)
        return Decision(new, acts)

    if isinstance(event, StopDone):
        if phase is not Phase.STOPPING:
            return Decision(state, ignored=True)
        return _after_stop(state, event.ok, event.reason, s)

    if isinstance(event, CheckDone):
        if phase is not Phase.RUNNING or event.run != state.run or state.unmanaged:
            return Decision(state, ignored=True)
        if event.ok:
            if state.failed_checks == 0:
                return Decision(state, (ScheduleCheck(state.run, s.check_interval_s),))
            return Decision(replace(state, failed_checks=0, reason="running (status ok again)"),
                            (ScheduleCheck(state.run, s.check_interval_s),))
        failed = state.failed_checks + 1
        if failed >= s.check_failures:
            return _fail_run(replace(state, failed_checks=failed), s,
                             f"status failed {failed} time{'s' if failed > 1 else ''} in a row",
                             event.reason, event.uptime_s)
        return Decision(replace(state, failed_checks=failed,
                                reason=f"status failed ({failed} of {s.check_failures}): "
                                       f"{event.reason}"),
                        (ScheduleCheck(state.run, s.check_interval_s),))

    if isinstance(event, Adopted):
        if state.holding or phase not in (Phase.IDLE, Phase.WAITING, Phase.FAILED):
            return Decision(state, ignored=True)
        kept = replace(state, holding=True, acquiring=False, queued=False, backing_off=False,
                       token=event.token, failed_checks=0)
        if event.held:
            return Decision(replace(kept, phase=Phase.HELD, reason=f"stopped (lock kept across "
                                    f"an HA daemon restart, token {event.token})"))
        run = state.run + 1
        return Decision(replace(kept, phase=Phase.STARTING, run=run,
                                reason=f"lock kept across an HA daemon restart (token "
                                       f"{event.token}): taking it over again"),
                        (Start(event.token, run, adopt=True, unmanaged=state.unmanaged),))

    if isinstance(event, Isolated):
        if phase not in (Phase.STARTING, Phase.RUNNING):
            return Decision(state, ignored=True)
        new, acts = _stop(state, Then.REQUEUE, "isolated", event.detail, urgent=True)
        return Decision(new, acts)

    if isinstance(event, Failed):
        if phase is not Phase.RUNNING or event.run != state.run:
            return Decision(state, ignored=True)
        if state.unmanaged:
            return Decision(replace(state, reason=f"unmanaged (maintenance): {event.reason}; "
                                                  f"not acted on"))
        return _fail_run(state, s, "failed", event.reason, event.uptime_s)

    if isinstance(event, FailureExpired):
        if phase is not Phase.FAILED or state.holding or event.run != state.run:
            return Decision(state, ignored=True)
        forgotten = replace(state, fail_count=0, streak=0, restarts_used=0)
        if state.unmanaged:
            return Decision(replace(forgotten, reason=f"{state.reason}; failure expired "
                                                      f"(maintenance: not queued)"))
        new, acts = _acquire(forgotten, f"failure expired after {s.failure_timeout_s:g} s: "
                                        f"waiting for the lock again")
        return Decision(new, acts)

    if isinstance(event, RetryAcquire):
        if phase is Phase.WAITING and not state.acquiring and not state.holding:
            if state.refusing or state.unmanaged:
                return Decision(replace(state, backing_off=False), ignored=True)
            return Decision(replace(state, acquiring=True, queued=False, backing_off=False),
                            (Acquire(),))
        return Decision(state, ignored=True)

    if isinstance(event, Refuse):
        if event.on == state.refusing:
            return Decision(state, ignored=True)
        if event.on:
            if phase is Phase.WAITING and (state.acquiring or state.queued) and \
                    not state.holding:
                return Decision(replace(state, refusing=True, acquiring=False, queued=False,
                                        releasing=True, reason=f"new services refused here "
                                        f"({event.reason or 'emon'}): left the lock queue"),
                                (Release(),))
            return Decision(replace(state, refusing=True))
        accepted = replace(state, refusing=False)
        if phase is Phase.WAITING and not state.acquiring and not state.holding and \
                not state.backing_off and not state.unmanaged:
            return Decision(replace(accepted, acquiring=True, queued=False,
                                    reason="new services accepted again: waiting for the lock"),
                            (Acquire(),))
        return Decision(accepted)

    raise TypeError(f"not a policy event: {event!r}")


def _maintenance(state: State, on: bool) -> Decision:
    if on == state.unmanaged:
        return Decision(state, ignored=True)
    phase = state.phase
    if on:
        unmanaged = replace(state, unmanaged=True)
        if phase is Phase.WAITING and (state.acquiring or state.queued) and not state.holding:
            return Decision(replace(unmanaged, acquiring=False, queued=False, releasing=True,
                                    reason="maintenance: left the lock queue"), (Release(),))
        if phase is Phase.RUNNING:
            return Decision(replace(unmanaged, reason=f"running, unmanaged (maintenance: not "
                                                      f"checked, stopped nor moved; token "
                                                      f"{state.token})"), (CancelCheck(),))
        return Decision(unmanaged)
    managed = replace(state, unmanaged=False)
    if phase is Phase.RUNNING:
        return Decision(replace(managed, failed_checks=0,
                                reason=f"running (maintenance over: checking; token "
                                       f"{state.token})"), (ScheduleCheck(state.run, 0.0),))
    if phase is Phase.WAITING and not state.acquiring and not state.holding and \
            not state.backing_off and not state.refusing:
        return Decision(replace(managed, acquiring=True, queued=False,
                                reason="maintenance over: waiting for the lock"), (Acquire(),))
    return Decision(managed)
