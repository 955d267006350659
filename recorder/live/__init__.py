"""The live capture service: its loop, options and counters, status and metrics, control socket,
systemd notifications, and the packet sources it is wired to."""
