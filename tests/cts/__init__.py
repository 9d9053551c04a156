"""CTS: a cluster test suite in the spirit of Pacemaker's CTS, on the lab, with the real daemons.

One service (`service`: a TCP server behind the floating IP 192.168.1.100, a pulser, a user
script) runs on an N-node lab with skyge-heartbeat, -bus, -lock and -ha on every node
(`cluster`). Scenarios (`scenarios`) inject one fault each (stop, start, crash, freeze a node;
cut cables, partition; kill -9 a daemon and restart it as systemd would; kill or hang the user's
program, stop its pulses, break its script) and wait, bounded, for the cluster to recover. Every
scenario is judged the same two ways (`runner`):

- by the client: a prober in the client namespace connects to the floating IP every ~50 ms and
  logs each attempt with its time and answer ("n2 token 7": the node and its fencing token). The
  service must answer again, from the expected node, within the scenario's bound; where it must
  not move, the client must never go unanswered for more than a second; and no answer may carry
  an older fencing token than one already seen (an old copy serving after a newer one);
- by the record (`record`): the user script writes every start and stop (with the node and the
  fencing token) to one file all nodes share, and the harness writes every fault it injects, on
  one clock. The checker (`checker`) rebuilds per node the intervals the service ran there and
  counts double_active: the times two nodes' intervals overlap. An interval is never shorter than
  the life of the server process, except for a frozen node, whose copy cannot act: it counts as
  ended at the freeze when the node stops it within 1 s after the thaw, and as running on through
  the freeze otherwise.

availability_percent = answered probes / probes while the service is expected to be available:
all of them except during the windows the harness marks ``expect-down`` (a scenario that stops
every node, until a quorum runs again; the reset after a failed scenario). Failovers count.

Run ``python -m tests.cts --minutes 10`` (random scenarios back to back, each once before any
repeats; ``--list``, ``--scenario NAME``, ``--all``, ``--seed N``, ``--nodes N``, ``--save DIR``);
the last line is ``RESULT {json}``. ``pytest tests/cluster/test_cts.py`` runs each scenario once.
"""
