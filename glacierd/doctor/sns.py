"""The SNS endpoint's settings: the topics, the listener's port, and what the store must
send there (each store says that itself: ``Store.notification_check``)."""

from __future__ import annotations

import asyncio
import errno
import socket

import aiohttp

from glacierd.config import Config
from glacierd.doctor.model import CheckResult, Doctor, Problem


def _try_bind(host: str, port: int) -> OSError | None:
    """Bind (and release) host:port as the SNS listener would; the error, or None."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        return OSError(errno.EADDRNOTAVAIL, str(exc))
    for family, kind, proto, _, address in infos:
        with socket.socket(family, kind, proto) as sock:
            # aiohttp's listener sets SO_REUSEADDR too, so TIME_WAIT leftovers are no conflict.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                return exc
    return None


async def _daemon_answers(cfg: Config) -> bool:
    """Whether a glacierd control API answers /health (it then holds its own SNS port)."""
    api = cfg.api
    connector = aiohttp.UnixConnector(path=str(api.socket)) if api.socket else None
    url = "http://localhost/health" if api.socket else f"{api.base_url}/health"
    headers = {"Authorization": f"Bearer {api.token}"} if api.token else {}
    try:
        async with (
            aiohttp.ClientSession(
                connector=connector, timeout=aiohttp.ClientTimeout(total=3)
            ) as session,
            session.get(url, headers=headers) as resp,
        ):
            body = await resp.json(content_type=None)
            return resp.status in (200, 503) and isinstance(body, dict) and "store" in body
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return False


async def check_sns(d: Doctor) -> CheckResult:
    cfg = d.config
    sns = cfg.sns
    interval = cfg.schedule.poll_interval_seconds
    polling = (
        f"every {interval:g} s (schedule.poll_interval_seconds)"
        if interval
        else "at an interval that depends on the retrieval tier"
    )
    if not sns.enabled:
        detail = d.store.notification_check(None, polling)
        return CheckResult("sns", True, f"SNS endpoint disabled: {detail}")
    if not sns.topic_arns:
        raise Problem(
            "sns.enabled is true but sns.topic_arns is empty",
            "list the topic ARNs whose messages glacierd should accept",
        )
    note = d.store.notification_check(sns.topic_arns, polling)
    where = f"{sns.host}:{sns.port}"
    error = await asyncio.to_thread(_try_bind, sns.host, sns.port)
    if error is None:
        listener = f"listener {where}{sns.path} can be bound"
    elif error.errno == errno.EADDRINUSE and await _daemon_answers(cfg):
        listener = f"listener {where}{sns.path} is held by the running glacierd"
    elif error.errno == errno.EADDRINUSE:
        raise Problem(
            f"port {where} (sns.port) is in use by another process",
            f"stop that process ('ss -ltnp sport = :{sns.port}' names it) or change sns.port",
        )
    elif error.errno in (errno.EACCES, errno.EPERM):
        raise Problem(
            f"port {where} (sns.port) may not be bound by this user",
            "use a port above 1023 behind a reverse proxy, or grant CAP_NET_BIND_SERVICE "
            "(AmbientCapabilities= in the systemd unit)",
        )
    else:
        raise Problem(
            f"sns.host {sns.host} cannot be bound ({error.strerror or error})",
            "set sns.host to an address of this machine, such as 0.0.0.0 or 127.0.0.1",
        )
    detail = f"{listener}; accepting topics {', '.join(sns.topic_arns)}"
    return CheckResult("sns", True, f"{detail}; {note}" if note else detail)
