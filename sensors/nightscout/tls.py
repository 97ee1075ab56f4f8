"""HTTPS for the receiver, and the warning for a receiver exposed over plain HTTP.

The ``api-secret`` hash is a password equivalent: when the receiver is
reachable beyond the Pi, give it a certificate (``tls_cert_file``,
``tls_key_file``: :func:`tls_context`, HTTPS with TLS 1.2 or later) or put a
TLS reverse proxy in front and bind 127.0.0.1. A receiver bound to a
non-loopback address without TLS says so at start (:func:`exposure_warning`).
The server side of each handshake runs on the connection's worker, within the
request deadline (:func:`handshake`).
"""

from __future__ import annotations

import ipaddress
import select
import ssl
import time
from pathlib import Path

from sensors.nightscout.deadline import DeadlineExceeded


def tls_context(cert_file: str | Path, key_file: str | Path) -> ssl.SSLContext:
    """A server context (TLS 1.2 or later) with the certificate chain loaded; ValueError when it cannot be."""
    for name, path in (("tls_cert_file", cert_file), ("tls_key_file", key_file)):
        if not Path(path).is_file():
            raise ValueError(f"{name} {str(path)!r} is not a file")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(cert_file), str(key_file))
    except (ssl.SSLError, OSError) as err:
        raise ValueError(f"cannot load the TLS certificate {str(cert_file)!r} and key {str(key_file)!r}: "
                         f"{err}") from None
    return context


def handshake(tls: ssl.SSLSocket, deadline: float) -> None:
    """The server side of the TLS handshake, all of it before ``deadline`` (a client trickling its
    handshake cannot extend it, as it could with a timeout per read)."""
    tls.setblocking(False)
    try:
        while True:
            try:
                tls.do_handshake()
                return
            except ssl.SSLWantReadError:
                want_read = True
            except ssl.SSLWantWriteError:
                want_read = False
            left = deadline - time.monotonic()
            if left <= 0:
                raise DeadlineExceeded("TLS handshake past the deadline")
            ready = select.select([tls] if want_read else [], [] if want_read else [tls], [], left)
            if not any(ready):
                raise DeadlineExceeded("TLS handshake past the deadline")
    finally:
        tls.setblocking(True)


def exposure_warning(bound_host: str, port: int, tls: ssl.SSLContext | None) -> str | None:
    """The warning for a receiver reachable beyond this machine over plain HTTP, or None."""
    if tls is not None:
        return None
    try:
        loopback = ipaddress.ip_address(bound_host.split("%")[0]).is_loopback
    except ValueError:
        loopback = False
    if loopback:
        return None
    return (f"WARNING: the Nightscout receiver listens on {bound_host}:{port} over plain HTTP: the API secret's "
            f"hash (a password equivalent) and glucose data cross the network unencrypted, and anyone who "
            f"can reach the port can try secrets; set tls_cert_file and tls_key_file, or bind 127.0.0.1 "
            f"behind a TLS reverse proxy")
