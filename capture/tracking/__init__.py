"""The call tracker: datagrams in, finished CapturedCalls out, with timeouts, hand-off of a call's legs
and the live capture's spill rounds."""
