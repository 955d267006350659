"""The live capture's crash journal: sealed segment files of captured frames, their local key, and the
thread that writes them."""
