"""Where sealed recording files are kept: a local directory written atomically."""
