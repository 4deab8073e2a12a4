"""Typed AMI errors. Each class has a stable `code` (for logs, metrics and HTTP mapping)."""

from __future__ import annotations

from typing import ClassVar


class AmiError(Exception):
    """Base of every AMI client error."""

    code: ClassVar[str] = "ami_error"


class AmiConnectError(AmiError):
    """The TCP connection to Asterisk could not be made."""

    code = "ami_connect_failed"


class AmiLoginError(AmiError):
    """Asterisk refused the Login (bad user/secret, login already in use...). Not retried."""

    code = "ami_login_failed"


class AmiNotConnected(AmiError):
    """An action was requested while no authenticated AMI session exists. Nothing was sent."""

    code = "ami_not_connected"


class AmiConnectionLost(AmiError):
    """The link dropped after the action was written: Asterisk may or may not have run it."""

    code = "ami_connection_lost"


class AmiOriginateUnknown(AmiError):
    """An Originate was written but its outcome never arrived (link lost or timeout).

    The call may or may not have been placed. The Originate is never re-sent automatically.
    """

    code = "ami_originate_outcome_unknown"

    def __init__(self, message: str, *, cause: str) -> None:
        super().__init__(message)
        self.cause = cause  # "connection_lost" | "timeout" | "closed"


class AmiTimeout(AmiError):
    """No (complete) reply to an action within its timeout."""

    code = "ami_timeout"


class AmiActionError(AmiError):
    """Asterisk answered `Response: Error` (or anything but Success)."""

    code = "ami_action_error"

    def __init__(self, action: str, message: str, response: str = "Error") -> None:
        super().__init__(f"AMI action {action} failed: {response}: {message}")
        self.action = action
        self.message = message
        self.response = response


class AmiInvalidAction(AmiError, ValueError):
    """The caller built an action that cannot be sent (CR/LF in a value, bad header name)."""

    code = "ami_invalid_action"


class AmiFrameError(AmiError):
    """A received frame was malformed or too large; it was skipped (the stream goes on)."""

    code = "ami_frame_error"


class AmiClosed(AmiError):
    """The client was closed by its owner."""

    code = "ami_closed"
