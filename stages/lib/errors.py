"""The errors a user can fix. cli.run prints each as one line, `error: <message>`, and exits 1."""


class StageError(Exception):
    """A problem the user can fix; its message says how."""
