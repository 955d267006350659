"""Saving a finished call: render, seal and catalogue it (CallSaver), the rows it writes, the pool of
saver processes of the live capture, and the sealed spill files they read back."""
