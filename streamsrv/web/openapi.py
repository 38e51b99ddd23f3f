# -*- test-case-name: tests.test_web -*-
"""The OpenAPI 3.1 document served at ``/openapi.json``.

It describes the routes this build actually serves, with the contract's
error model; each capability adds its paths here as it lands.
"""

from __future__ import annotations

from typing import Any

from streamsrv import __version__
from streamsrv.errors import STATUS_FOR_CODE

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
                "parameters": [
                    _track_param(),
                    _query("format", "transcode to mp3, aac, opus, flac, or auto (chosen for this client)"),
                    _query("bitrate", "kb/s of the transcode (mp3 192, aac 128, opus 96 by default)"),
                    _query("container", "aac only: m4a (fragmented MP4, the default) or adts"),
                    _query("channels", "1 (downmix) or 2; default stereo, mono at low bit rates"),
                    _query("t", "start offset in seconds (the rendition is the audio from there)"),
                    _query("replaygain", "track or album: apply the catalog's gain before encoding"),
                    _query("download", "1: Content-Disposition attachment (stream:download)"),
                ],
                "get": {
                    "summary": "The original audio file or a transcode of it, with byte ranges",
                    "responses": stream_responses,
                },
                "head": {"summary": "Headers of GET", "responses": stream_responses},
            },
            **_more_paths(),
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


def _query(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema or {"type": "string"}}  # fmt: skip


def _get(summary: str, content: str = "application/json", params: list[dict[str, Any]] | None = None,
         errors: tuple[str, ...] = ("400", "401", "403", "404")) -> dict[str, Any]:  # fmt: skip
    responses: dict[str, Any] = {"200": {"description": summary, "content": {content: {}}}}
    responses.update({code: _ERROR for code in errors})
    operation: dict[str, Any] = {"summary": summary, "responses": responses}
    if params:
        operation["parameters"] = params
    return operation


def _post(summary: str, body: dict[str, Any]) -> dict[str, Any]:
    return {
        "summary": summary,
        "requestBody": {"required": True, "content": {"application/json": {"schema": body}}},
        "responses": {
            "200": {"description": summary},
            "400": _ERROR,
            "401": _ERROR,
            "403": _ERROR,
            "501": _ERROR,
        },
    }


def _more_paths() -> dict[str, Any]:
    """The routes beyond health and originals: auth, catalog, media, analytics, HLS, WebSocket."""
    track = [_track_param()]
    window = [_query("start", "seconds", {"type": "number"}), _query("end", "seconds", {"type": "number"})]
    period = [
        _query("from", "RFC 3339 or Unix seconds"), _query("to", "RFC 3339 or Unix seconds"),
        _query("granularity", "hour, day, week, month"), _query("limit", "1-100", {"type": "integer"}),
    ]  # fmt: skip
    return {
        "/api/v1/auth/refresh": {
            "post": _post(
                "Rotate a refresh token",
                {
                    "type": "object",
                    "required": ["refresh_token"],
                    "properties": {"refresh_token": {"type": "string"}},
                },
            )
        },
        "/api/v1/auth/revoke": {
            "post": _post(
                "Revoke by jti, or every token of a sub (admin)",
                {"type": "object", "properties": {"jti": {"type": "string"}, "sub": {"type": "string"}}},
            )
        },
        "/api/v1/tracks": {
            "get": _get(
                "Catalog listing",
                params=[
                    _query("q", "words in title, artist or album"),
                    _query("artist", "artist"),
                    _query("album", "album"),
                    _query("limit", "1-200", {"type": "integer"}),
                    _query("cursor", "from the previous page"),
                ],
            )
        },
        "/api/v1/tracks/{path}": {"parameters": track, "get": _get("Track metadata")},
        "/api/v1/artwork/{path}": {"parameters": track, "get": _get("Cover art", "image/*")},
        "/api/v1/waveform/{path}": {
            "parameters": track,
            "get": _get(
                "Peaks (audiowaveform v2, wavesurfer)",
                params=[
                    _query("samples_per_pixel", "zoom", {"type": "integer"}),
                    _query("pixels_per_second", "zoom", {"type": "integer"}),
                    _query("bits", "8 or 16", {"type": "integer"}),
                    _query("channels", "merge or split"),
                    _query("format", "json, dat or wavesurfer"),
                    *window,
                ],
            ),
        },
        "/api/v1/spectrum/{path}": {
            "parameters": track,
            "get": _get(
                "Spectral analysis",
                params=[
                    _query("format", "json or png"),
                    _query("fft_size", "power of two", {"type": "integer"}),
                    _query("hop", "samples", {"type": "integer"}),
                    _query("window", "hann, hamming, blackman"),
                    _query("spectrogram", "1 (default) or 0: the JSON's time x log-frequency grid"),
                    _query("frames", "the grid's most columns in time, 1..2000 (200)", {"type": "integer"}),
                    _query("bins", "the grid's rows, log frequency, 1..1024 (64)", {"type": "integer"}),
                    _query("max_frames", "analysis columns kept, 1..10000 (2000)", {"type": "integer"}),
                    _query("width", "PNG width", {"type": "integer"}),
                    _query("height", "PNG height, 8..4096 (256)", {"type": "integer"}),
                    _query("axes", "true: draw time and frequency axes around the PNG", {"type": "boolean"}),
                    *window,
                ],
            ),
        },
        "/api/v1/analytics/summary": {"get": _get("Listening summary", params=period)},
        "/api/v1/analytics/top-tracks": {"get": _get("Top tracks", params=period)},
        "/api/v1/analytics/tracks/{path}": {
            "parameters": track,
            "get": _get("A track's listening", params=period),
        },
        "/api/v1/analytics/users/{sub}": {
            "parameters": [{"name": "sub", "in": "path", "required": True, "schema": {"type": "string"}}],
            "get": _get("A user's listening", params=period),
        },
        "/api/v1/analytics/active": {"get": _get("Sessions open now")},
        "/api/v1/analytics/qoe": {"get": _get("Quality of experience", params=period)},
        "/api/v1/alerts": {
            "get": _get("Alert rules with their state; firing and recently resolved alerts (admin)")
        },
        "/api/v1/alerts/alertmanager": {
            "post": _post(
                "Prometheus Alertmanager webhook receiver, version 4 JSON (alerts:ingest)",
                {"type": "object", "required": ["version", "status", "alerts"]},
            )
        },
        "/api/v1/notifications": {
            "post": {
                **_post(
                    "Send a templated notification to users over their channels (notifications:send)",
                    {
                        "type": "object",
                        "required": ["template", "user_ids"],
                        "properties": {
                            "template": {"type": "string"},
                            "user_ids": {"type": "array", "items": {"type": "string"}},
                            "data": {"type": "object"},
                            "channels": {
                                "type": "array",
                                "items": {"enum": ["websocket", "email", "sms", "push"]},
                            },
                            "priority": {"enum": ["normal", "urgent"]},
                            "idempotency_key": {"type": "string"},
                        },
                    },
                ),
                "responses": {
                    "202": {"description": "Queued durably: {id, deliveries}"},
                    **{code: _ERROR for code in ("400", "401", "403", "501")},
                },
            }
        },
        "/api/v1/notifications/{id}": {
            "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "get": _get("A notification and each delivery's state (notifications:send)"),
        },
        "/api/v1/users/{id}/notification-preferences": {
            "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "get": _get("A user's notification preferences (self or admin)"),
            "put": _post("Replace a user's notification preferences (self or admin)", {"type": "object"}),
        },
        "/hls/{path}/master.m3u8": {
            "parameters": track,
            "get": _get("HLS multivariant playlist", "application/vnd.apple.mpegurl"),
        },
        "/ws": {
            "get": {
                "summary": "WebSocket events (see docs/api/websockets.md)",
                "responses": {"101": {"description": "Switching Protocols"}, "426": _ERROR},
            }
        },
    }
