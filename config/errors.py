"""The one application error type: a code, a message, and the HTTP status it maps to.

Services raise it; the API maps it to a 4xx JSON body, commands to exit code 2.
"""
from __future__ import annotations


class AppError(Exception):
    status = 400

    def __init__(self, code: str, message: str, *, status: int | None = None, details: list | dict | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        if status is not None:
            self.status = status
        self.details = details

    def to_dict(self) -> dict:
        body = {"code": self.code, "detail": self.message}
        if self.details:
            body["errors"] = self.details
        return body


class Forbidden(AppError):
    """The caller is known but may not do this (e.g. re-arm the kill switch without being staff)."""

    status = 403


class NotFound(AppError):
    status = 404


class Conflict(AppError):
    status = 409
