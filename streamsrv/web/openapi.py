# -*- test-case-name: tests.test_web -*-
"""The OpenAPI 3.1 document served at ``/openapi.json``.

It describes the routes this build actually serves, with the contract's
error model; each capability adds its paths here as it lands.
"""

from __future__ import annotations

from typing import Any

from streamsrv import __version__
from streamsrv.web.errors import STATUS_FOR_CODE

_ERROR = {"$ref": "#/components/responses/Error"}


def _track_param() -> dict[str, Any]:
    return {
        "name": "path",
        "in": "path",
        "required": True,
        "description": "Track path relative to the media root, '/'-separated, percent-encoded.",
        "schema": {"type": "string"},
    }


def openapi_document() -> dict[str, Any]:
    """Build the document (plain data, JSON-serialisable)."""
    stream_responses = {
        "200": {
            "description": "The whole file.",
            "headers": {
                "Accept-Ranges": {"schema": {"type": "string", "const": "bytes"}},
                "ETag": {"schema": {"type": "string"}},
                "X-Content-Duration": {"schema": {"type": "number"}},
            },
            "content": {"audio/*": {}},
        },
        "206": {
            "description": "One range, or several as multipart/byteranges.",
            "content": {"audio/*": {}, "multipart/byteranges": {}},
        },
        "304": {"description": "Not modified (If-None-Match / If-Modified-Since)."},
        "404": _ERROR,
        "412": _ERROR,
        "416": _ERROR,
        "503": _ERROR,
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "streamsrv",
            "version": __version__,
            "description": "On-demand audio streaming daemon.",
        },
        "paths": {
            "/health": {"get": {"summary": "Liveness", "responses": {"200": {"description": "alive"}}}},
            "/health/ready": {
                "get": {
                    "summary": "Readiness",
                    "responses": {"200": {"description": "ready"}, "503": {"description": "not ready"}},
                }
            },
            "/health/detailed": {
                "get": {
                    "summary": "Every check with status and timing",
                    "responses": {
                        "200": {"description": "ok or degraded"},
                        "503": {"description": "failing"},
                        "401": _ERROR,
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Prometheus metrics",
                    "responses": {"200": {"description": "text exposition format"}, "401": _ERROR},
                }
            },
            "/openapi.json": {
                "get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI"}}}
            },
            "/stream/{path}": {
                "parameters": [_track_param()],
                "get": {
                    "summary": "The original audio file, with byte ranges",
                    "responses": stream_responses,
                },
                "head": {"summary": "Headers of GET", "responses": stream_responses},
            },
        },
        "components": {
            "schemas": {
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message", "request_id"],
                            "properties": {
                                "code": {"type": "string", "enum": sorted(STATUS_FOR_CODE)},
                                "message": {"type": "string"},
                                "request_id": {"type": "string"},
                            },
                        }
                    },
                }
            },
            "responses": {
                "Error": {
                    "description": "A JSON error",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
                }
            },
        },
    }
