"""The listening socket: a private folder, a stale socket cleared, a live one respected, or the
one systemd passed in (sessiond.systemd.activation); and the peer's uid checked on every
connection (docs/protocol.md, "The socket")."""

from __future__ import annotations

import errno
import os
import socket
import stat
import struct

from sessionctl.socket_path import IMPERSONATION_HINT, folder_problem

from sessiond.systemd.activation import ActivationError
from sessiond.systemd.activation import take as take_activation


class SocketError(Exception):
    """The socket cannot be set up; the message says what to fix."""


def ensure_private_folder(folder: str) -> None:
    """Create the socket's folder 0700, or refuse one that another user could get into."""
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        st = os.stat(folder)
    except OSError as exc:
        raise SocketError(f"cannot create socket folder {folder}: {exc.strerror}") from None
    problem = folder_problem(st, os.getuid())
    if problem is None:
        return
    if st.st_uid != os.getuid():  # only its owner (or root) can fix it, not this user
        fix = (
            f"{IMPERSONATION_HINT}: refusing to listen there. Have it removed (its owner or "
            "root can), or set XDG_RUNTIME_DIR or --socket to a folder of your own"
        )
    else:
        fix = f"run: chmod 700 {folder}"
    raise SocketError(f"socket folder {folder} {problem}; {fix}")


def socket_is_live(path: str, timeout: float = 0.5) -> bool:
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(timeout)
    try:
        probe.connect(path)
        return True
    except OSError:
        return False
    finally:
        probe.close()


def bind_socket(path: str) -> socket.socket:
    """A listening socket at `path`, mode 0600. A socket file left by a dead daemon is
    replaced; one that still answers means another daemon runs, and that is an error."""
    ensure_private_folder(os.path.dirname(path) or ".")
    if os.path.lexists(path):
        if not stat.S_ISSOCK(os.lstat(path).st_mode):
            raise SocketError(f"{path} exists and is not a socket; remove it or choose --socket")
        if socket_is_live(path):
            raise SocketError(f"another sessiond is already serving {path}")
        os.unlink(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # the socket is born 0600, with no window where it is wider
    try:
        sock.bind(path)
    except OSError as exc:
        sock.close()
        raise SocketError(f"cannot bind {path}: {exc.strerror}") from None
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    sock.listen(socket.SOMAXCONN)
    sock.setblocking(False)
    return sock


def inherited_socket() -> socket.socket | None:
    """The listening socket systemd passed by socket activation, if any (the first one; the
    packaged socket unit passes only one). Malformed activation variables are a SocketError."""
    try:
        activation = take_activation()
    except ActivationError as exc:
        raise SocketError(str(exc)) from None
    if activation is None:
        return None
    fd = activation.first.fd
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise SocketError(
            f"socket activation passed fd {fd}, not a socket: {exc.strerror}"
        ) from None
    sock.setblocking(False)
    return sock


def peer_uid(sock: socket.socket) -> int | None:
    """The uid of the process at the other end (SO_PEERCRED), or None if unknown."""
    try:
        creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    except OSError as exc:
        if exc.errno in (errno.ENOTSOCK, errno.EBADF):
            return None
        raise
    _pid, uid, _gid = struct.unpack("3i", creds)
    return int(uid)
