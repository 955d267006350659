"""The catalogue database: schema and migrations, calls and their rows, search filters and scope."""
