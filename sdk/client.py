"""A thin client of Tessera's public REST API (``/api/v1/``), ``Authorization: Token <token>``.

Only what the provider tooling needs: certificates, CA roots, devices and their secure elements,
jobs. Errors come back as :class:`~sdk.errors.ApiError` with the server's stable ``code``.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from sdk.errors import ApiError, JobFailed, UsageError

__all__ = ["ApiClient", "ServerConfig", "TERMINAL_STATES"]

URL_ENV = "TESSERA_URL"
ORG_ENV = "TESSERA_ORG"
TOKEN_ENV = "TESSERA_TOKEN"
TERMINAL_STATES = frozenset({"succeeded", "failed", "rejected", "timed_out", "canceled", "expired"})
_SLUG = re.compile(r"^[-a-zA-Z0-9_]+$")
_ID = re.compile(r"^[0-9a-fA-F-]{32,36}$")


@dataclass(frozen=True)
class ServerConfig:
    url: str
    org: str
    token: str

    @classmethod
    def resolve(
        cls, environ: Mapping[str, str] | None = None, stored: Mapping[str, str] | None = None
    ) -> ServerConfig:
        """From ``TESSERA_URL``/``TESSERA_ORG``/``TESSERA_TOKEN``, the URL and org falling back to
        the store's saved values (the token is never saved)."""
        environ = os.environ if environ is None else environ
        stored = stored or {}
        url = (environ.get(URL_ENV) or stored.get("url", "")).rstrip("/")
        org = environ.get(ORG_ENV) or stored.get("org", "")
        token = environ.get(TOKEN_ENV, "")
        return cls(url=url, org=org, token=token)

    def check(self) -> ServerConfig:
        if not self.url:
            raise UsageError(f"no server: set {URL_ENV} (e.g. https://tessera.example)", code="no_server")
        if not self.url.startswith(("http://", "https://")):
            raise UsageError(f"{URL_ENV} must start with http:// or https://", code="bad_server")
        if not self.org or not _SLUG.match(self.org):
            raise UsageError(f"set {ORG_ENV} to your organisation's slug", code="no_org")
        if not self.token:
            raise UsageError(f"set {TOKEN_ENV} to your API token", code="no_token")
        return self


def check_id(value: str, what: str = "id") -> str:
    if not _ID.match(value or ""):
        raise UsageError(f"{what} must be a UUID, got {value!r}", code="bad_id")
    return value


class ApiClient:
    """Calls on behalf of one organisation. ``transport`` lets tests pass an httpx transport."""

    def __init__(
        self, config: ServerConfig, *, timeout: float = 30.0, transport: httpx.BaseTransport | None = None
    ) -> None:
        self.config = config.check()
        self._http = httpx.Client(
            base_url=config.url + "/api/v1",
            headers={"Authorization": f"Token {config.token}", "Accept": "application/json"},
            timeout=timeout,
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- plumbing --

    def _request(
        self, method: str, path: str, *, json: Any = None, expect: tuple[int, ...] = (200,)
    ) -> httpx.Response:
        try:
            r = self._http.request(method, path, json=json)
        except httpx.HTTPError as e:
            raise ApiError(
                f"cannot reach {self.config.url}: {type(e).__name__}", code="unreachable"
            ) from None
        if r.status_code not in expect:
            code, message = "http_error", r.reason_phrase
            try:
                body = r.json()
                if isinstance(body, dict):
                    err = body.get("error", body)
                    if isinstance(err, dict):
                        code = str(err.get("code") or code)
                        message = str(err.get("message") or err.get("detail") or message)
            except ValueError:
                pass
            raise ApiError(
                f"{method} {path}: {r.status_code} {code}: {message}", code=code, status=r.status_code
            )
        return r

    def _json(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        r = self._request(method, path, **kw)
        try:
            body = r.json()
        except ValueError:
            raise ApiError(f"{method} {path}: the server answered non-JSON", code="bad_response") from None
        if not isinstance(body, dict):
            raise ApiError(f"{method} {path}: the server answered an unexpected shape", code="bad_response")
        return body

    @property
    def _org(self) -> str:
        return f"/orgs/{self.config.org}"

    # -- organisation --

    def organisation(self) -> dict[str, Any]:
        return self._json("GET", f"{self._org}/")

    # -- certificates --

    def request_certificate(self, csr_pem: str) -> dict[str, Any]:
        return self._json("POST", f"{self._org}/certificates/csr/", json={"csr": csr_pem}, expect=(201,))

    def certificate(self, cert_id: str) -> dict[str, Any]:
        return self._json("GET", f"{self._org}/certificates/{check_id(cert_id)}/")

    def cas(self) -> list[dict[str, Any]]:
        body = self._json("GET", "/ca/")
        results = body.get("results", [])
        return [c for c in results if isinstance(c, dict)]

    def ca_root(self, ca_id: str) -> bytes:
        return self._request("GET", f"/ca/{check_id(ca_id)}/root/").content

    def crl(self, ca_id: str) -> bytes:
        return self._request("GET", f"/ca/{check_id(ca_id)}/crl/").content

    # -- devices and secure elements --

    def device(self, device_id: str) -> dict[str, Any]:
        return self._json("GET", f"{self._org}/devices/{check_id(device_id, 'device')}/")

    def casd_certificate(self, se_id: str) -> dict[str, Any]:
        return self._json(
            "GET", f"{self._org}/secure-elements/{check_id(se_id, 'secure element')}/casd-certificate/"
        )

    # -- jobs --

    def submit_job(self, device_id: str, kind: str, params: dict[str, Any]) -> dict[str, Any]:
        return self._json(
            "POST",
            f"{self._org}/devices/{check_id(device_id, 'device')}/jobs/",
            json={"kind": kind, "params": params},
            expect=(201,),
        )

    def job(self, job_id: str) -> dict[str, Any]:
        return self._json("GET", f"{self._org}/jobs/{check_id(job_id, 'job')}/")

    def job_input(self, job_id: str, body: dict[str, Any]) -> dict[str, Any]:
        """The provider's next commands for a job awaiting input (load_keys_scp11 round 2)."""
        return self._json("POST", f"{self._org}/jobs/{check_id(job_id, 'job')}/input/", json=body)

    def cancel_job(self, job_id: str) -> None:
        """Cancel a job; best effort (an error is ignored: the job may have ended meanwhile)."""
        try:
            self._json("POST", f"{self._org}/jobs/{check_id(job_id, 'job')}/cancel/", json={})
        except ApiError:
            pass

    def wait_job(
        self,
        job_id: str,
        *,
        timeout: float = 300.0,
        interval: float = 0.5,
        sleep: Callable[[float], None] = time.sleep,
        until: Collection[str] = (),
    ) -> dict[str, Any]:
        """Poll the job until it is terminal (or in one of the states ``until``); :class:`JobFailed`
        unless it succeeded (or reached one of ``until``)."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            state = job.get("state")
            if state in until:
                return job
            if state in TERMINAL_STATES:
                if state != "succeeded":
                    detail = job.get("error_code") or state
                    raise JobFailed(
                        f"job {job_id} {state}: {detail}: {job.get('error_message') or ''}".rstrip(": "),
                        code=str(detail),
                        job=job,
                    )
                return job
            if time.monotonic() >= deadline:
                raise JobFailed(
                    f"job {job_id} is still {state} after {timeout:.0f} s", code="job_wait_timeout", job=job
                )
            sleep(interval)
