"""SIP signalling: messages, party addresses and URIs, SDP, TCP stream reassembly, and the dialog state
machine that makes calls of them."""
