"""The one exception type for mistakes a user can make.

The CLI prints its message on one line and exits with code 2; anything else is a bug and keeps its
traceback.
"""


class MctError(Exception):
    """A problem the user can fix (bad flag, config, data line, prompt, checkpoint, device).

    The message names the problem and, where there is one, the fix.
    """


class ConfigError(MctError):
    """A config value is wrong; the message already names the key and where its value came from."""
