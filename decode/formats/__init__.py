"""Audio file formats: WAV and MP3 writers, and reading a stored recording back to samples."""
