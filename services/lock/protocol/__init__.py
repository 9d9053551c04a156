"""The lock protocol: one lock daemon's logic, with no I/O and no clock of its own.

timing.py (durations), table.py (holders and ordered waiters), names.py, store.py (what
survives restarts), member.py (the node's own sessions), authority.py (the grants of one term),
quorum.py (majority and the two-node rule), node.py (view, votes and leases; drives the
member and authority sides).

Every input carries `now_ns` (a monotonic clock). After each input the daemon (`server.py`) or
the simulator (`sim.py`) takes what the node produced as one value, `Node.take_outputs()`
(session and leader events, fence requests, log lines); the datagrams in `Node.out_beats` and
`Node.out_data` go through `Links` (numbering, acknowledgements, retransmission). So a whole
cluster can be simulated in a unit test, with delays, losses and asymmetric views, and its
history checked.

## The rule (see docs/ARCHITECTURE.md, lock section)

*Votes with leases.* Every node votes for one candidate: the lowest-domain node it sees that is
eligible (in its membership view, heard from lately, knowing its own membership), except that it
stays with an established authority while that one stays eligible, and joins one it hears rather
than start an election (a daemon that just started listens first). A vote is given in answer to
a candidate's *round* (a beat sent every `beat_ns`) and is a promise: no vote for anyone else
until `vote_lease_ns` after the round was received. A candidate whose round got votes from a
quorum (majority of the expected nodes, its own vote included; one vote for a lone node under the
two-node rule) holds the authority lease until the round's *send* time plus the vote lease (less
a drift margin): every promise outlasts it, so two authorities never hold leases at the same
time, whatever the views.

*Terms.* A candidate proposes term = highest term seen + 1; a voter votes for a proposal only if
the term is above every term it voted for (or the same term of the same candidate), and persists
it first. So each term has at most one authority, and terms grow across restarts of everything.

*Holds.* A member's locks are safe while its *hold lease* runs: the authority confirms the
member's beats (while holding its own lease and knowing the member's state), and a confirmed beat
makes the member's locks safe until that beat's send time plus `hold_lease_ns`. The authority
drops a member's state only after the receipt time of the last beat it confirmed plus the same
lease, so the member (which stops `early_ns` before) has told its sessions `Lost` before. The
authority's own sessions are safe until its authority lease + `authority_grace_ns`. A member cut
off (membership unknown, or no quorum in its view) tells its sessions at once, and the authority
learns it only when the hold lease ends: the warning is whatever remained of the lease.

*Clean stop.* The daemon tells its sessions first, then (`early_ns` later if they held locks) its
last beat says it leaves: promises to it end, the authority drops its state at once, and a
successor need not wait for its leases (it held nothing any more).

*Two nodes.* A lone node (the other out of its view, or the other's lock daemon stopped or
silent for `switch_ns`) counts as a quorum while a reference IP answers (see `lone`).

*New authority.* It rebuilds the table from the members' reports (holds with tokens, waits with
queue keys) and grants nothing until every expected node reported, or the missing one is the
previous authority and its grace ran out, or a full hold lease passed since the election (any
unreported member has told its sessions `Lost` by then).

*Tokens.* One counter; a block ahead is persisted by a majority (`token_reserve` in beats) before
its tokens are used; a new authority starts above every floor its voters report.

*Fencing* (with a fence command, `Node.fencing`): leases assume a node that stops answering
stops using its locks; a fence makes sure. A member whose lease ran out keeps its holds in the
table until it is fenced or reports again, and a new authority grants nothing until every lock
daemon it has heard from (and the previous authority) reported or was fenced. The authority only
asks (`Node.fence_requests`); the daemon runs the command and answers `Node.fence_done`.

*Kept holds* (`Open.keep_holds`) are the member's business alone: a session whose stream ended
stays, orphaned, with its holds until a session of its label continues it (same id), so the
authority sees nothing change.
"""
from __future__ import annotations

from .authority import Authority
from .member import Member, OpenRefused
from .node import Node, Outputs
from .store import MemoryStore, Store
from .timing import MS, US, Timing

__all__ = [
           "MS",
           "US",
           "Authority",
           "Member",
           "MemoryStore",
           "Node",
           "OpenRefused",
           "Outputs",
           "Store",
           "Timing",
]
