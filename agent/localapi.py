"""The agent's local API: session keys for on-device applications (DESIGN §6, docs/session-keys.md §5).

A Unix socket (``[localapi] socket``, mode 0660, group ``[localapi] group``) speaking HTTP/1.1 with
one route::

    POST /session-key   {"sd": "A000000151535001", "service": "meter.reading", "epoch": 20419}
    200                 {"sd": …, "service": …, "epoch": …, "key": "<32 hex digits>"}

The caller is identified by the socket peer's uid (``SO_PEERCRED``: the kernel's word, not the
client's) and may ask only for the SD and services its ``[[localapi.apps]]`` entry grants. The key
is derived by the SE (DERIVE SESSION KEY, :mod:`gp.sessionkeys`) on a logical channel of its own,
opened and closed while holding the card lock the runner's card access goes through
(:class:`CardAccess`), so a local request never lands in the middle of a job's APDU exchange.

Errors answer ``{"error": {"code", "message"}}`` with a stable code, never a traceback; log lines
name the application, SD, service, epoch and outcome, never the key.
"""

from __future__ import annotations

import contextlib
import grp
import json
import logging
import os
import socket
import socketserver
import stat
import struct
import threading
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

from agent.cardaccess import CardAccess, LocalApiError, derive_on_card
from agent.config import LocalApiApp, LocalApiSettings
from agent.errors import BackendError, ConfigError
from gp.errors import EncodeError
from gp.sessionkeys import check_epoch, check_service

__all__ = [
    "CardAccess",
    "LocalApiError",
    "LocalApiServer",
    "derive_on_card",
]  # agent.cardaccess's, re-exported

log = logging.getLogger("agent.localapi")

MAX_BODY = 1024
SOCKET_MODE = 0o660
_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid


def _parse_request(body: bytes) -> tuple[bytes, str, int]:
    try:
        data = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise LocalApiError(400, "invalid_json", "the body must be a JSON object") from None
    if not isinstance(data, dict):
        raise LocalApiError(400, "invalid_json", "the body must be a JSON object")
    unknown = set(data) - {"sd", "service", "epoch"}
    if unknown:
        raise LocalApiError(400, "unknown_field", f"unknown field(s): {', '.join(sorted(unknown))}")
    sd = data.get("sd")
    try:
        if not isinstance(sd, str):
            raise ValueError
        aid = bytes.fromhex(sd)
        if not 5 <= len(aid) <= 16:
            raise ValueError
    except ValueError:
        raise LocalApiError(400, "invalid_sd", "sd must be an AID: 5 to 16 bytes in hex") from None
    try:
        check_service(data.get("service"))
    except EncodeError as e:
        raise LocalApiError(400, "invalid_service", str(e)) from None
    try:
        epoch = check_epoch(data.get("epoch"))
    except EncodeError as e:
        raise LocalApiError(400, "invalid_epoch", str(e)) from None
    return aid, data["service"], epoch


def _authorise(app: LocalApiApp | None, uid: int, sd: bytes, service: str) -> LocalApiApp:
    if app is None:
        raise LocalApiError(403, "unknown_application", f"uid {uid} is not a configured local application")
    if sd.hex().upper() != app.sd or service not in app.services:
        raise LocalApiError(
            403,
            "not_permitted",
            f"application {app.name!r} may not ask for {service!r} of {sd.hex().upper()}",
        )
    return app


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "tessera-agent-localapi"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass  # one structured line per request instead (below)

    def _peer_uid(self) -> int:
        creds = self.request.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size)
        return int(_PEERCRED.unpack(creds)[1])

    def _answer(self, status: int, body: dict[str, Any]) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(raw)

    def _error(self, e: LocalApiError) -> None:
        self._answer(e.status, {"error": {"code": e.code, "message": e.message}})

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self.close_connection = True
        if self.path == "/session-key":
            self._error(LocalApiError(405, "method_not_allowed", "use POST /session-key"))
        else:
            self._error(LocalApiError(404, "not_found", "the only route is POST /session-key"))

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        self.close_connection = True
        uid = self._peer_uid()
        app = self.server.settings.app_for(uid)
        name = app.name if app else "-"
        outcome = "ok"
        sd = service = epoch = None
        try:
            if self.path != "/session-key":
                raise LocalApiError(404, "not_found", "the only route is POST /session-key")
            try:
                length = int(self.headers.get("Content-Length", ""))
            except ValueError:
                raise LocalApiError(411, "length_required", "send a Content-Length") from None
            if not 0 <= length <= MAX_BODY:
                raise LocalApiError(413, "too_large", f"the body must be at most {MAX_BODY} bytes")
            aid, service, epoch = _parse_request(self.rfile.read(length))
            sd = aid.hex().upper()
            _authorise(app, uid, aid, service)
            try:
                key = self.server.access.derive_session_key(sd=aid, service=service, epoch=epoch)
            except BackendError as e:
                raise LocalApiError(
                    503, "card_unavailable", f"the secure element is unavailable: {e}"
                ) from None
            self._answer(200, {"sd": sd, "service": service, "epoch": epoch, "key": key.hex().upper()})
        except LocalApiError as e:
            outcome = e.code
            self._error(e)
        except Exception:  # a bug must not kill the server thread nor show a traceback to the caller
            outcome = "internal_error"
            log.exception("event=session_key_internal_error app=%s uid=%d", name, uid)
            self._error(LocalApiError(500, "internal_error", "the agent failed; see its log"))
        log.info(
            "event=session_key app=%s uid=%d sd=%s service=%s epoch=%s outcome=%s",
            name,
            uid,
            sd or "-",
            service or "-",
            "-" if epoch is None else epoch,
            outcome,
        )


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    allow_reuse_address = False
    # A client with a timeout connects non-blocking: on a Unix socket a full backlog is EAGAIN at
    # once, not a wait, so leave room for a burst of local applications.
    request_queue_size = 128

    def __init__(self, settings: LocalApiSettings, access: CardAccess) -> None:
        self.settings = settings
        self.access = access
        super().__init__(str(settings.socket), _Handler, bind_and_activate=False)


class LocalApiServer:
    """The local API on its Unix socket, served from a background thread (:meth:`start`/:meth:`close`)."""

    def __init__(self, settings: LocalApiSettings, access: CardAccess) -> None:
        self.settings = settings
        self.path = Path(settings.socket)
        self._server = _Server(settings, access)
        self._thread: threading.Thread | None = None

    def start(self) -> LocalApiServer:
        """Bind (replacing a stale socket, never another file), set mode 0660 and group, serve."""
        gid = -1
        if self.settings.group is not None:
            try:
                gid = grp.getgrnam(self.settings.group).gr_gid
            except KeyError:
                raise ConfigError(f"localapi.group: no group named {self.settings.group!r}") from None
        try:
            st = self.path.lstat()
        except FileNotFoundError:
            pass
        else:
            if not stat.S_ISSOCK(st.st_mode):
                raise ConfigError(f"localapi.socket: {self.path} exists and is not a socket")
            self.path.unlink()
        # Bound, given its group and mode and listening under a temporary name, then renamed into
        # place: a client never finds the path before it accepts connections.
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        self._server.server_address = str(tmp)
        old = os.umask(0o177)  # no window in which the socket is open to others
        try:
            self._server.server_bind()
        except OSError as e:
            raise ConfigError(f"localapi.socket: cannot bind {self.path}: {e.strerror}") from None
        finally:
            os.umask(old)
        try:
            if gid != -1:
                os.chown(tmp, -1, gid)
            os.chmod(tmp, SOCKET_MODE)
            self._server.server_activate()
            os.replace(tmp, self.path)
        except OSError as e:
            self._server.server_close()
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
            raise ConfigError(f"localapi.socket: cannot set up {self.path}: {e.strerror}") from None
        self._thread = threading.Thread(target=self._server.serve_forever, name="localapi", daemon=True)
        self._thread.start()
        log.info("event=localapi_listening socket=%s apps=%d", self.path, len(self.settings.apps))
        return self

    def close(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def __enter__(self) -> LocalApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
