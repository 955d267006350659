"""The fixture generator behind ``pcaps/make_fixtures.py`` (the command line).

Modules, from the bottom up:

* ``constants``: rates, packet time, time units, the epoch of the scenarios, tolerances, link types
* ``signals``: xorshift32, the test signals (tones, low-pass noise)
* ``g711``: Sun g711.c mu-law / A-law encoders and decoders, the decoded reference of a leg
* ``capfile``: ``Frame`` and the classic pcap / pcapng writers
* ``frames``: MAC addresses, link encapsulation (Ethernet, 802.1Q, 802.1ad, Linux SLL, raw IP),
  ``Capture`` (IPv4 / IPv6 / UDP / IPv4 fragments)
* ``sip``: ``Party``, SDP bodies, ``Dialog`` (INVITE, responses, ACK, CANCEL, BYE)
* ``rtp``: ``LegSpec`` (loss, duplicates, reordering, wraps), RTP packets, jitter, RTCP SR+SDES
* ``expected``: the calls and legs of ``NAME.expected.json``
* ``calls``: the shared call sequences (parties, set-up, media, RTCP, teardown)
* ``fixture``: ``Fixture``, ``Scenario`` and writing one fixture's files
* ``scenarios``: the table of scenarios (``SCENARIOS``); ``dialogs`` and ``special`` hold the
  scenarios and hooks that are more than a standard call's parameters
* issue 3 ("capture every call a real network carries"): ``indialog`` (re-INVITE, BYE with any
  CSeq, legs in segments), ``midcall`` (port change, hold, SSRC change, RTCP-mux, no BYE),
  ``forks`` (forked INVITE, Call-ID reuse), ``siptcp`` (SIP over TCP), ``mirror`` (ERSPAN II / III,
  VXLAN, HEP v3)
"""
