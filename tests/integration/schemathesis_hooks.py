"""schemathesis hooks for `test_openapi_fuzz.py` (loaded by the schemathesis CLI it runs).

A deployment's body is a zip archive (`application/zip`), which schemathesis has no serializer
for: it sends the bytes it generates as they are, like `application/octet-stream`.
"""

import schemathesis

schemathesis.serializer.alias("application/zip", "application/octet-stream")
