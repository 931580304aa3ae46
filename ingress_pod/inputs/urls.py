"""Opening a user's URL: FFmpeg's protocol options per scheme, and what a failed connection was.

FFmpeg reports an unresolvable host, a refused TLS certificate and a failed TLS handshake all as
"Input/output error"; `diagnose` repeats the connection with Python (only after FFmpeg failed)
to tell the user which it was.
"""

from __future__ import annotations

import socket
import ssl
import urllib.parse

_DEFAULT_PORTS = {"http": 80, "https": 443}


def ca_file() -> str | None:
    """The CA bundle to check HTTPS sources against: `SSL_CERT_FILE`, else the system's."""
    # PyAV's GnuTLS has no trust store of its own: without a file it trusts nothing.
    return ssl.get_default_verify_paths().cafile


def protocol_options(url: str) -> dict[str, str]:
    """FFmpeg protocol options for reading `url` (nothing for schemes other than HTTP(S))."""
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    options: dict[str, str] = {}
    if scheme in _DEFAULT_PORTS:
        # A file whose connection drops mid-body is resumed with a Range request (FFmpeg 8.1 fails
        # with "Input/output error" otherwise); streams of unknown length are never retried.
        options["reconnect"] = "1"
    if scheme == "https":
        # FFmpeg does not check certificates unless asked. Its HLS demuxer passes no TLS option to
        # the playlists and segments it opens itself: only the URL given is checked.
        options["tls_verify"] = "1"
        if cafile := ca_file():
            options["ca_file"] = cafile
    return options


def diagnose(url: str, timeout: float) -> str | None:
    """Why connecting to `url` failed, if Python can tell: "cannot resolve host …", "TLS
    certificate not trusted: …", "TLS handshake failed: …"; None when it connects fine."""
    parts = urllib.parse.urlsplit(url)
    scheme, host = parts.scheme.lower(), parts.hostname
    if scheme not in _DEFAULT_PORTS or not host:
        return None
    try:
        port = parts.port or _DEFAULT_PORTS[scheme]
    except ValueError:
        return None
    try:
        socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return f"cannot resolve host {host}"
    if scheme != "https":
        return None
    context = ssl.create_default_context(cafile=ca_file())
    try:
        with (
            socket.create_connection((host, port), timeout) as sock,
            context.wrap_socket(sock, server_hostname=host),
        ):
            return None
    except ssl.SSLCertVerificationError as err:
        return f"TLS certificate not trusted: {err.verify_message}"
    except ssl.SSLError as err:
        return f"TLS handshake failed: {err.reason or err}"
    except OSError as err:
        return err.strerror or None
