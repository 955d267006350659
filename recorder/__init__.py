"""The appliance: configuration, recording policy, saving calls (capture -> decode -> store) from
files and from the live capture service, and the crash journal."""
