"""Calls' media to audio: codecs, the timeline (reorder, place by RTP timestamp), stereo
rendering, resampling and WAV writing.

Imports only ``capture``'s value types (``capture.media``, ``capture.calls``,
``capture.serial``) and numpy; see ARCHITECTURE.md.
"""
