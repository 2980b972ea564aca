"""Process-wide TLS tuning shared by fleet's clients and the simulated clusters.

Owns: `lean_read_buffers()`. CPython's asyncio SSL transport (``asyncio.sslproto.SSLProtocol``, 3.11+)
reads decrypted data into a buffer of ``max_size`` = 256 KiB per connection, allocated up front. fleet
keeps a watch stream open per (cluster, kind), so over TLS that buffer alone cost ~240 KB per stream:
measured here, an idle TLS watch stream grew the client's RSS by 309 KB with the default and by 70 KB
with a 16 KiB buffer (a TLS record carries at most 16 KiB of plaintext, so a read never needs more;
larger reads just loop). Does not: touch certificates or verification (`fleet.clients.kube.TlsDefaults`).
"""

from __future__ import annotations

import asyncio.sslproto

READ_BUFFER = 16 * 1024  # one TLS record's worth of plaintext


def lean_read_buffers() -> None:
    """Shrink asyncio's per-connection TLS read buffer to `READ_BUFFER` (idempotent, never grows it)."""
    proto = asyncio.sslproto.SSLProtocol
    if getattr(proto, "max_size", READ_BUFFER) > READ_BUFFER:
        proto.max_size = READ_BUFFER
