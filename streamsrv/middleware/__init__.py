"""Cross-cutting HTTP concerns: security headers, access log, compression."""
