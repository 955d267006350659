"""Keys and sealing: the key directory and compliance key file, the sealed-file format with its
signatures, and the vault that seals, signs, verifies and opens a call's recording."""
