"""User-facing errors. `rlcal` prints an `RlcalError` as one line on stderr and exits with code 2."""


class RlcalError(Exception):
    """Bad input or configuration, explained in one sentence (no traceback shown)."""
