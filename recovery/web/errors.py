"""Errors as JSON `{"error": {"code", "message"}}` with the right status - never an HTML 500."""

from __future__ import annotations

import logging

from flask import Flask, Response, jsonify
from sqlalchemy.exc import DataError, DBAPIError, OperationalError, PendingRollbackError
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def error_response(status: int, code: str, message: str) -> tuple[Response, int]:
    return jsonify(error={"code": code, "message": message}), status


def init_app(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def api_error(exc: ApiError) -> tuple[Response, int]:
        return error_response(exc.status, exc.code, exc.message)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> tuple[Response, int]:
        status = exc.code or 500
        code = (exc.name or "error").lower().replace(" ", "_")
        return error_response(status, code, exc.description or exc.name)

    @app.errorhandler(DataError)
    def bad_value(exc: DataError) -> tuple[Response, int]:
        # The database cannot hold a value we were sent (PostgreSQL: NUL in text, an integer out
        # of range): the caller's mistake, and no retry can fix it - never "database down".
        log.info("value refused by the database: %s", exc.__class__.__name__)
        return error_response(400, "invalid_parameter", "a parameter has a value not allowed")

    @app.errorhandler(OperationalError)
    @app.errorhandler(DBAPIError)
    @app.errorhandler(PendingRollbackError)  # a connection lost mid-transaction
    def database_down(exc: Exception) -> tuple[Response, int]:
        # Not stored means not acknowledged: a 503 makes Stripe (and other callers) retry.
        log.error("database unavailable: %s", exc.__class__.__name__)
        return error_response(503, "database_unavailable", "the database is unavailable; retry")

    @app.errorhandler(Exception)
    def unexpected(exc: Exception) -> tuple[Response, int]:
        log.exception("unhandled error")
        return error_response(500, "internal_error", "unexpected error; it has been logged")
