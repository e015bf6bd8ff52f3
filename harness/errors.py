"""Errors that the command line turns into one line and exit status 2."""


class UsageError(Exception):
    """Bad input from the user: the message names the problem and the fix."""
