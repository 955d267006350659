"""Value types every capture stage shares: packet and datagram batches, RTP legs and formats, captured
calls, spilled-media references, parse errors, serial-number arithmetic and row gathers."""
