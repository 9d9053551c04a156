"""What an HA service is made of on a node, each part idempotent and usable on its own:

- `fip`: floating IPs (netlink, labelled ``NIC:NNNN``), `garp`: gratuitous ARP after adding one;
- `store`: shared-disk mounts with mode and owner;
- `script`: the user script (seed, LSB or OCF) with timeouts, and `ProcessWatch` (pidfd) for the
  service's main process.

Start order for a service: stores, floating IPs (+ gratuitous ARP), ``script start``; stop in
reverse. The supervisor (lock holder logic) composes them.
"""
