"""Exit codes of momctl, one per kind of failure an admin script may test."""

OK = 0
#: A policy failed to parse, check or evaluate.
POLICY_ERROR = 1
#: Bad command line or input (unreadable file, malformed JSON).
INVALID_ARGUMENT = 2
