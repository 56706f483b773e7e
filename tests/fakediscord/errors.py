"""Discord's error bodies, and the exception a test gets for an impossible invocation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


class FakeDiscordError(Exception):
    """Misuse of the fake from a test (e.g. dispatching before the bot connected)."""


class InvalidInvocation(FakeDiscordError):
    """Discord's client would never send this interaction (unknown option, out of range, ...)."""


@dataclass(frozen=True)
class FieldError:
    """One entry of a 50035 Invalid Form Body ``errors`` tree."""

    path: tuple[str | int, ...]
    code: str
    message: str


class DiscordError(Exception):
    """Raised by request handlers; rendered as ``{"message", "code"[, "errors"]}``.

    ``violation`` says whether the bot broke a rule (recorded in ``fake.violations``).
    """

    def __init__(
        self,
        status: int,
        code: int,
        message: str,
        *,
        errors: dict[str, Any] | None = None,
        violation: bool = True,
        detail: str = "",
    ) -> None:
        super().__init__(f"{status} {code} {message}")
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors
        self.violation = violation
        self.detail = detail

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"message": self.message, "code": self.code}
        if self.errors is not None:
            body["errors"] = self.errors
        return body


def form_error(errors: Sequence[FieldError]) -> DiscordError:
    """Build Discord's 50035 error with the nested ``errors`` tree discord.py flattens."""
    tree: dict[str, Any] = {}
    for err in errors:
        node = tree
        for key in err.path:
            node = node.setdefault(str(key), {})
        node.setdefault("_errors", []).append({"code": err.code, "message": err.message})
    detail = "; ".join(f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors)
    return DiscordError(400, 50035, "Invalid Form Body", errors=tree, detail=detail)


# Shorthands for the errors the fake emits, named after Discord's JSON error codes.
def unknown_interaction() -> DiscordError:
    return DiscordError(404, 10062, "Unknown interaction")


def already_acknowledged() -> DiscordError:
    return DiscordError(400, 40060, "Interaction has already been acknowledged.")


def invalid_webhook_token(detail: str = "") -> DiscordError:
    return DiscordError(401, 50027, "Invalid Webhook Token", detail=detail)


def unknown_webhook() -> DiscordError:
    return DiscordError(404, 10015, "Unknown Webhook")


def too_large(detail: str = "") -> DiscordError:
    return DiscordError(413, 40005, "Request entity too large", detail=detail)


def missing_permissions(detail: str = "") -> DiscordError:
    return DiscordError(403, 50013, "Missing Permissions", detail=detail)


def missing_access(detail: str = "") -> DiscordError:
    return DiscordError(403, 50001, "Missing Access", detail=detail)


def cannot_dm(detail: str = "") -> DiscordError:
    return DiscordError(403, 50007, "Cannot send messages to this user", detail=detail)


def empty_message() -> DiscordError:
    return DiscordError(400, 50006, "Cannot send an empty message")


def unknown(kind: str) -> DiscordError:
    codes = {
        "Account": 10001,
        "Channel": 10003,
        "Guild": 10004,
        "Member": 10007,
        "Message": 10008,
        "Role": 10011,
        "User": 10013,
        "Webhook": 10015,
        "application command": 10063,
    }
    return DiscordError(404, codes[kind], f"Unknown {kind}")
