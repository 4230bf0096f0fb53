"""Fault injection: real processes, a real PostgreSQL, and a TCP proxy between them that refuses,
resets, drops or stalls connections at chosen points of the protocol stream."""
