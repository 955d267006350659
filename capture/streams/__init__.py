"""RTP media: header parsing, binding streams to call legs (correlation), non-audio media, RTP-only
calls, the pending media log and its spill encoding."""
