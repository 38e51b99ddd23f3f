"""Cross-cutting HTTP concerns: admission (the guard), rate limits, headers, CORS, access and audit logs."""
