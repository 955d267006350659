"""The ``callrec`` command line: click commands, thin over the library."""
