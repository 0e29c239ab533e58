"""Errors the pack raises for bad input: each message says what to do about it."""


class P3SInputError(ValueError):
    """Input that the method cannot work with; the message tells the user how to fix it."""
