"""Suite definitions and the optimization guide's expected tables, as data."""
