"""Calls' media to audio: codecs, the timeline (reorder, place by RTP timestamp), stereo rendering,
resampling, quality figures, audio file formats and pictures.

Imports only ``capture``'s value types (``callrec.capture.model``) and numpy; see ARCHITECTURE.md.
"""
