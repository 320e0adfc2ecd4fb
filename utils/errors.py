"""Exceptions shared across layers (datasets raise them inside DataLoader workers, engines catch them).

A DataLoader re-raises a worker's exception in the main process as the same type with the worker's
traceback folded into the message; ``clean_message`` recovers the one line worth printing.
"""
from __future__ import annotations


class DataError(RuntimeError):
    """Bad input data the run cannot continue with; its message names the file (and list line)."""


class TooManyBadSamplesError(DataError):
    """More distinct unreadable training files than --max_bad_samples."""


class ListError(DataError, ValueError):
    """A malformed, empty or out-of-range data list / class folder; the message names the file and line."""


class MissingDataError(DataError, FileNotFoundError):
    """A data list or data folder that does not exist; the message names it and the flag that set it."""


class UnreadableEvalSampleError(DataError):
    """A validation / test video could not be read and --skip_bad_test was not given."""


def clean_message(e: BaseException) -> str:
    """The original one-line message, without a DataLoader worker's 'Caught ... Original Traceback' wrapper."""
    text = str(e).strip()
    if "Original Traceback" not in text:
        return text.splitlines()[0] if text else type(e).__name__
    last = text.splitlines()[-1]
    name = type(e).__name__ + ": "
    return last[len(name):] if last.startswith(name) else last
