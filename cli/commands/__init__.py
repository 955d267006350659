"""The click commands, one module per command group, each thin over the library."""
