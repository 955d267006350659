"""Who may do what: users, roles, scopes and the portal's password hashes."""
