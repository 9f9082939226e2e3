"""Node power from the BMC (Redfish over HTTPS, or IPMI DCMI via ipmitool) as an energy source.

The node scope is the whole chassis as its BMC measures it: CPUs, memory, GPUs, fans,
NICs, disks and the power supplies' losses. A BMC refreshes its reading about once a
second, so each source polls on its own thread at ``period_s`` (default 1 s) and
``energy_j_at(t_ns)`` gives cumulative joules at a time: the BMC's energy counter
interpolated between the samples around it where the BMC has one (method ``counter``),
else the sampled power integrated with the trapezoid rule, the power interpolated
linearly (``power_integration``); a power step between two samples costs at most
step x period / 2 in a window. ``read_j()`` (the meter's EnergySource call) answers at
once with the energy now, holding the last sample's power past it: exact while the load
is level across the edge, as window edges are kept.

A BMC that stops answering (or answers nonsense) makes ``read_j()`` raise
:class:`~bench.errors.SensorError`, so the meter records null with the reason. Bad
configuration (URL, credentials) raises :class:`~bench.errors.BenchError`. Credentials
come from ``BMC_USERNAME``/``BMC_PASSWORD`` or a credentials file, never the command line.

Redfish is spoken with the standard library (``http.client`` + ``ssl``): the DMTF
``redfish`` package turns TLS verification off unless a CA file is given and retries a
stalled request ten times a second apart, and ``sushy`` brings the OpenStack stack; three
requests (session login, GET, DELETE) do not need either.
"""

from __future__ import annotations

import base64
import bisect
import http.client
import json
import os
import re
import shutil
import ssl
import subprocess
import threading
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from bench.errors import BenchError, NoSensor, SensorError

DEFAULT_PERIOD_S = 1.0
REQUEST_TIMEOUT_S = 2.0
_NS = 1_000_000_000


@dataclass(frozen=True)
class Credentials:
    """A BMC user name and password (never printed)."""

    username: str
    password: str

    def __repr__(self) -> str:
        return f"Credentials(username={self.username!r}, password=***)"


def credentials(path: str | os.PathLike | None = None, environ=None) -> Credentials:
    """BMC credentials from a file, else from ``BMC_USERNAME`` and ``BMC_PASSWORD``.

    The file (``BMC_CREDENTIALS_FILE`` when ``path`` is None) is TOML with ``username``
    and ``password``, readable by its owner only (mode 600).

    Raises:
        BenchError: no credentials, an unreadable file or one others can read (one line).
    """
    env = os.environ if environ is None else environ
    path = path or env.get("BMC_CREDENTIALS_FILE")
    if path:
        p = Path(path)
        try:
            if p.stat().st_mode & 0o077:
                raise BenchError(f"BMC credentials file {p} is readable by others "
                                 "(chmod 600 it)")
            d = tomllib.loads(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise BenchError(f"cannot read BMC credentials file {p} "
                             f"({exc.__class__.__name__})") from None
        if not isinstance(d.get("username"), str) or not isinstance(d.get("password"), str):
            raise BenchError(f"BMC credentials file {p} needs username and password strings")
        return Credentials(d["username"], d["password"])
    user, password = env.get("BMC_USERNAME"), env.get("BMC_PASSWORD")
    if not user or password is None:
        raise BenchError("BMC credentials missing: set BMC_USERNAME and BMC_PASSWORD, or "
                         "BMC_CREDENTIALS_FILE (a TOML file with username and password)")
    return Credentials(user, password)


@dataclass(frozen=True)
class Sample:
    """One BMC reading: when (monotonic ns), power in W, and the energy counter in J if any.

    ``t_ns`` is the middle of the request; ``latency_s`` its duration (the BMC read its
    sensor somewhere inside it).
    """

    t_ns: int
    power_w: float | None
    energy_j: float | None = None
    latency_s: float = 0.0


class SampledNodeSource:
    """An energy source (scope ``node``) fed by a thread that calls ``poll`` every period.

    Args:
        poll: returns one :class:`Sample` (its ``t_ns`` from ``clock_ns``) or raises
            SensorError.
        method: ``counter`` (samples carry ``energy_j``) or ``power_integration``.
        period_s: time between polls (about 1 s: BMCs refresh no faster).
        max_gap_s: a last sample older than this, or a gap between samples longer than
            this inside a window, makes the read fail (the BMC stopped answering); default
            3 periods + the request timeout.
    """

    scope = "node"

    def __init__(self, name: str, device: str, description: str, method: str,
                 poll: Callable[[], Sample], period_s: float = DEFAULT_PERIOD_S,
                 max_gap_s: float | None = None,
                 clock_ns: Callable[[], int] = time.monotonic_ns) -> None:
        if not period_s > 0:
            raise BenchError("the BMC sampling period must be positive")
        self.name, self.device, self.description, self.method = name, device, description, method
        self.period_s = period_s
        self.max_gap_s = max_gap_s or 3 * period_s + REQUEST_TIMEOUT_S
        self._poll = poll
        self._clock_ns = clock_ns
        self._t: list[int] = []
        self._p: list[float] = []
        self._e: list[float] = []  # cumulative J at each sample (counter or trapezoid)
        self._lat: list[float] = []  # request durations, s
        self._cond = threading.Condition()
        self._error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_read_ns: int | None = None

    # -- the polling thread ---------------------------------------------------------
    def start(self) -> SampledNodeSource:
        """Take the first sample, then poll on a thread every ``period_s``.

        Raises:
            NoSensor: the first poll failed (the reason says why).
        """
        try:
            first = self._poll()
        except SensorError as exc:
            raise NoSensor(str(exc)) from None
        self._add(first)
        self._thread = threading.Thread(target=self._run, name=f"bmc-{self.name}", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        next_ns = self._clock_ns()
        while not self._stop.is_set():
            next_ns += int(self.period_s * _NS)
            delay = (next_ns - self._clock_ns()) / _NS
            if delay > 0 and self._stop.wait(delay):
                break
            if delay < -self.period_s:
                next_ns = self._clock_ns()  # fell behind (a slow BMC): no burst of polls
            try:
                s = self._poll()
            except (SensorError, BenchError) as exc:  # BenchError: credentials now refused
                with self._cond:
                    self._error = str(exc)
                    self._cond.notify_all()
                continue
            self._add(s)

    def _add(self, s: Sample) -> None:
        with self._cond:
            if self._t and s.t_ns <= self._t[-1]:
                return
            if self.method == "counter":
                if s.energy_j is None:
                    self._error = f"{self.name}: the reading has no energy counter"
                    return
                e = s.energy_j
            else:
                if s.power_w is None:
                    self._error = f"{self.name}: the reading has no power"
                    return
                e = 0.0 if not self._t else self._e[-1] + (
                    (self._p[-1] + s.power_w) / 2 * (s.t_ns - self._t[-1]) / _NS)
            self._t.append(s.t_ns)
            self._p.append(s.power_w if s.power_w is not None else float("nan"))
            self._e.append(e)
            self._lat.append(s.latency_s)
            self._error = None
            self._cond.notify_all()

    def close(self) -> None:
        """Stop polling (idempotent)."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=REQUEST_TIMEOUT_S + self.period_s + 1)

    def __enter__(self) -> SampledNodeSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- reading ----------------------------------------------------------------------
    def samples(self) -> list[Sample]:
        """The samples so far (time, power, cumulative J)."""
        with self._cond:
            return [Sample(*x) for x in zip(self._t, self._p, self._e, self._lat, strict=True)]

    def energy_j_at(self, t_ns: int, timeout_s: float | None = None) -> float:
        """Cumulative J at monotonic time ``t_ns``, interpolated between the samples around it.

        Waits up to ``timeout_s`` (default ``max_gap_s``) for a sample past ``t_ns``; with
        ``timeout_s = 0`` it returns at once, holding the last sample's power (or the
        counter's last rate) past it, which is exact while the power stays level and off
        by at most the change in power x the sample's age otherwise. A meter can read a
        window's edges this way after the window, as it does the GPU sampler's traces.

        Raises:
            SensorError: no sample before ``t_ns``; none past it within ``timeout_s``; the
                last sample older than ``max_gap_s`` (the BMC stopped answering); or a gap
                longer than ``max_gap_s`` since the previous read.
        """
        timeout_s = self.max_gap_s if timeout_s is None else timeout_s
        with self._cond:
            if timeout_s > 0 and not self._cond.wait_for(
                    lambda: bool(self._t) and self._t[-1] >= t_ns, timeout=timeout_s):
                why = f" ({self._error})" if self._error else ""
                raise SensorError(f"{self.name}: no BMC reading past the edge within "
                                  f"{timeout_s:g} s{why}")
            if not self._t or t_ns < self._t[0]:
                raise SensorError(f"{self.name}: read before the first BMC sample")
            age_s = (t_ns - self._t[-1]) / _NS
            if age_s > self.max_gap_s:
                why = f" ({self._error})" if self._error else ""
                raise SensorError(f"{self.name}: no BMC reading for {age_s:.1f} s{why}")
            k = bisect.bisect_right(self._t, t_ns) - 1  # the sample at or before t
            since = self._last_read_ns if self._last_read_ns is not None else t_ns
            lo = max(0, bisect.bisect_right(self._t, since) - 1)
            gaps = [b - a for a, b in zip(self._t[lo:k + 1], self._t[lo + 1:k + 1],
                                          strict=False)]
            if gaps and max(gaps) > self.max_gap_s * _NS:
                raise SensorError(f"{self.name}: the BMC did not answer for "
                                  f"{max(gaps) / _NS:.1f} s inside the window")
            return self._energy_at(k, t_ns)

    def _energy_at(self, k: int, t_ns: int) -> float:
        """Energy at t from sample k (at or before t) and the next one, if any."""
        if self._t[k] == t_ns:
            return self._e[k]
        t0 = self._t[k]
        if k + 1 < len(self._t):  # interpolate
            t1 = self._t[k + 1]
            f = (t_ns - t0) / (t1 - t0)
            if self.method == "counter":
                return self._e[k] + f * (self._e[k + 1] - self._e[k])
            p0, p1 = self._p[k], self._p[k + 1]
            p_t = p0 + f * (p1 - p0)
            return self._e[k] + (p0 + p_t) / 2 * (t_ns - t0) / _NS
        # past the last sample: hold its power (a counter: its power, else its last rate)
        p = self._p[k]
        if p != p and k > 0:  # a counter without a power reading
            p = (self._e[k] - self._e[k - 1]) / ((self._t[k] - self._t[k - 1]) / _NS)
        return self._e[k] + (0.0 if p != p else p) * (t_ns - t0) / _NS

    def read_j(self) -> float:
        """Cumulative J now; returns at once (past the last sample: its power held).

        Raises:
            SensorError: the BMC stopped answering or answered nonsense (see energy_j_at).
        """
        t = self._clock_ns()
        e = self.energy_j_at(t, timeout_s=0)
        self._last_read_ns = t
        return e


# -- Redfish ------------------------------------------------------------------------


@dataclass(frozen=True)
class RedfishTarget:
    """A parsed ``redfish://BMC[:PORT][/CHASSIS]``."""

    host: str
    port: int
    chassis: str | None


def parse_redfish_url(url: str) -> RedfishTarget:
    """``redfish://BMC[:PORT][/CHASSIS]`` (HTTPS; port 443 by default).

    Raises:
        BenchError: not that form, or credentials in the URL (one line).
    """
    u = urlsplit(url)
    if u.scheme != "redfish" or not u.hostname:
        raise BenchError(f"BMC address {url!r}: use redfish://BMC[:PORT][/CHASSIS]")
    if u.username or u.password:
        raise BenchError("BMC address: no credentials in the URL; set BMC_USERNAME and "
                         "BMC_PASSWORD or BMC_CREDENTIALS_FILE")
    try:
        port = u.port or 443
    except ValueError:
        raise BenchError(f"BMC address {url!r}: bad port") from None
    chassis = u.path.strip("/") or None
    if chassis and "/" in chassis:
        raise BenchError(f"BMC address {url!r}: the path is one chassis id")
    return RedfishTarget(u.hostname, port, chassis)


class RedfishClient:
    """Just enough Redfish: session login (basic auth where there is no session service),
    GET with a timeout, logout. TLS is verified unless ``insecure``."""

    def __init__(self, target: RedfishTarget, creds: Credentials, insecure: bool = False,
                 ca_file: str | None = None, timeout_s: float = REQUEST_TIMEOUT_S) -> None:
        self.target, self.timeout_s = target, timeout_s
        self._creds = creds
        if insecure:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        else:
            ctx = ssl.create_default_context(cafile=ca_file)
        self._ctx = ctx
        self._token: str | None = None
        self._session: str | None = None
        self._basic = False
        self._lock = threading.Lock()  # one request at a time per client

    def _request(self, method: str, path: str, body: dict | None = None,
                 auth: bool = True) -> tuple[int, dict, bytes]:
        headers = {"Accept": "application/json", "OData-Version": "4.0"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if auth and self._token:
            headers["X-Auth-Token"] = self._token
        elif auth and self._basic:
            raw = f"{self._creds.username}:{self._creds.password}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(raw).decode()
        conn = http.client.HTTPSConnection(self.target.host, self.target.port,
                                           timeout=self.timeout_s, context=self._ctx)
        try:
            conn.request(method, path, body=None if body is None else json.dumps(body),
                         headers=headers)
            r = conn.getresponse()
            return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read(1 << 20)
        except ssl.SSLCertVerificationError as exc:
            raise SensorError(f"BMC {self.target.host}: TLS certificate not trusted "
                              f"({exc.verify_message}); give its CA file or use insecure"
                              ) from None
        except (OSError, http.client.HTTPException) as exc:
            raise SensorError(f"BMC {self.target.host}:{self.target.port}: "
                              f"{exc.__class__.__name__} {exc}".rstrip()) from None
        finally:
            conn.close()

    def login(self) -> None:
        """Open a Redfish session; fall back to basic auth where there is no session service.

        Raises:
            BenchError: the BMC refused the credentials.
            SensorError: the BMC did not answer.
        """
        status, headers, _ = self._request(
            "POST", "/redfish/v1/SessionService/Sessions",
            {"UserName": self._creds.username, "Password": self._creds.password}, auth=False)
        if status in (200, 201) and headers.get("x-auth-token"):
            self._token = headers["x-auth-token"]
            loc = headers.get("location")
            self._session = urlsplit(loc).path if loc else None
            return
        if status in (401, 403):
            raise BenchError(f"BMC {self.target.host}: the credentials were refused")
        self._basic = True  # no session service (404, 405, 501): basic auth on every request

    def get(self, path: str) -> dict:
        """GET a Redfish resource as JSON (logs in again once if the session expired).

        Raises:
            SensorError: no answer, an error status, or not a JSON object.
        """
        with self._lock:
            status, _, data = self._request("GET", path)
            if status == 401 and self._token:
                self._token = None
                self.login()
                status, _, data = self._request("GET", path)
        if status != 200:
            raise SensorError(f"BMC {self.target.host}: GET {path} answered HTTP {status}")
        try:
            doc = json.loads(data)
        except ValueError:
            raise SensorError(f"BMC {self.target.host}: GET {path} is not JSON") from None
        if not isinstance(doc, dict):
            raise SensorError(f"BMC {self.target.host}: GET {path} is not a JSON object")
        return doc

    def logout(self) -> None:
        """Delete the session (errors ignored: the BMC expires it anyway)."""
        if self._session and self._token:
            try:
                self._request("DELETE", self._session)
            except SensorError:
                pass
        self._token = self._session = None


def _reading(doc: dict, *keys) -> float | None:
    """``doc[k1][k2]...`` as a finite float, else None."""
    node: object = doc  # any JSON value on the way down
    for k in keys:
        if isinstance(node, list):
            node = node[k] if isinstance(k, int) and len(node) > k else None
        elif isinstance(node, dict):
            node = node.get(k)
        else:
            return None
    if isinstance(node, bool) or not isinstance(node, (int, float)):
        return None
    v = float(node)
    return v if v == v and abs(v) != float("inf") else None


def _link(doc: dict, key: str) -> str | None:
    v = doc.get(key)
    return v.get("@odata.id") if isinstance(v, dict) and isinstance(v.get("@odata.id"), str) \
        else None


class RedfishNodeSource(SampledNodeSource):
    """Node energy from a Redfish BMC: EnvironmentMetrics (EnergyJoules or EnergykWh: a
    counter; PowerWatts: integrated) or the older Power resource (PowerConsumedWatts).

    Args:
        url: ``redfish://BMC[:PORT][/CHASSIS]``; without a chassis, the first one listed.
        creds: see :func:`credentials` (default: from the environment).
        insecure: do not verify the BMC's TLS certificate (self-signed BMCs).
        ca_file: a CA bundle to verify the BMC's certificate with.
        period_s: polling period (about 1 s).
        max_gap_s: how long the BMC may be silent before reads fail (default 3 periods +
            the 2 s request timeout).
    """

    def __init__(self, url: str, creds: Credentials | None = None, insecure: bool = False,
                 ca_file: str | None = None, period_s: float = DEFAULT_PERIOD_S,
                 max_gap_s: float | None = None,
                 clock_ns: Callable[[], int] = time.monotonic_ns) -> None:
        target = parse_redfish_url(url)
        self.client = RedfishClient(target, creds or credentials(), insecure, ca_file)
        self._clock = clock_ns
        try:
            self.client.login()
            chassis = self._chassis(target.chassis)
            path, method, field = self._power_resource(chassis)
        except SensorError as exc:
            raise NoSensor(str(exc)) from None
        self._path, self._field = path, field
        where = f"{target.host}{path}"
        super().__init__(f"redfish-{target.host}", f"node:{target.host}",
                         f"Redfish {where} ({field}), TLS "
                         f"{'not verified' if insecure else 'verified'}", method,
                         self._read, period_s, max_gap_s, clock_ns)
        self.start()

    def _chassis(self, chassis_id: str | None) -> str:
        if chassis_id:
            return f"/redfish/v1/Chassis/{chassis_id}"
        members = self.client.get("/redfish/v1/Chassis").get("Members")
        ids = [m.get("@odata.id") for m in members or [] if isinstance(m, dict)]
        if not ids or not isinstance(ids[0], str):
            raise SensorError(f"BMC {self.client.target.host}: no chassis listed")
        return ids[0]

    def _power_resource(self, chassis: str) -> tuple[str, str, str]:
        doc = self.client.get(chassis)
        env = _link(doc, "EnvironmentMetrics")
        if env:
            e = self.client.get(env)
            for key in ("EnergyJoules", "EnergykWh"):
                if _reading(e, key, "Reading") is not None:
                    return env, "counter", key
            if _reading(e, "PowerWatts", "Reading") is not None:
                return env, "power_integration", "PowerWatts"
        power = _link(doc, "Power")
        if power and _reading(self.client.get(power), "PowerControl", 0,
                              "PowerConsumedWatts") is not None:
            return power, "power_integration", "PowerConsumedWatts"
        raise SensorError(f"BMC {self.client.target.host}: {chassis} reports no power "
                          "(neither EnvironmentMetrics nor Power.PowerControl)")

    def _read(self) -> Sample:
        t_send = self._clock()
        doc = self.client.get(self._path)
        t_recv = self._clock()
        t = (t_send + t_recv) // 2  # the BMC answered somewhere in between
        if self._field == "PowerConsumedWatts":
            p, e = _reading(doc, "PowerControl", 0, "PowerConsumedWatts"), None
        else:
            p = _reading(doc, "PowerWatts", "Reading")
            e = _reading(doc, self._field, "Reading") if self.method == "counter" else None
            if e is not None and self._field == "EnergykWh":
                e *= 3.6e6
        if (e if self.method == "counter" else p) is None or (p is not None and p < 0):
            raise SensorError(f"BMC {self.client.target.host}: no valid {self._field} in "
                              f"{self._path}")
        return Sample(t, p, e, (t_recv - t_send) / _NS)

    def close(self) -> None:
        """Stop polling and log out."""
        super().close()
        self.client.logout()


# -- IPMI DCMI ------------------------------------------------------------------------

_IPMI_POWER = re.compile(r"Instantaneous power reading\s*:\s*([0-9.]+)\s*Watts", re.I)


def parse_ipmi_url(url: str) -> tuple[str | None, int | None]:
    """``ipmi://`` (this node, through the local driver) or ``ipmi://BMC[:PORT]`` (lanplus).

    Raises:
        BenchError: not that form (one line).
    """
    u = urlsplit(url)
    if u.scheme != "ipmi" or u.path.strip("/") or u.username or u.password:
        raise BenchError(f"BMC address {url!r}: use ipmi:// or ipmi://BMC[:PORT] "
                         "(credentials from the environment)")
    try:
        return u.hostname, u.port
    except ValueError:
        raise BenchError(f"BMC address {url!r}: bad port") from None


class IpmiNodeSource(SampledNodeSource):
    """Node power from ``ipmitool dcmi power reading``, integrated (``power_integration``).

    Remote BMCs use ``-I lanplus -H BMC -U USER -E``: the password goes to ipmitool in
    its environment (``IPMI_PASSWORD``), never on its command line.
    """

    def __init__(self, url: str = "ipmi://", creds: Credentials | None = None,
                 period_s: float = DEFAULT_PERIOD_S, max_gap_s: float | None = None,
                 ipmitool: str = "ipmitool",
                 clock_ns: Callable[[], int] = time.monotonic_ns) -> None:
        host, port = parse_ipmi_url(url)
        exe = shutil.which(ipmitool)
        if exe is None:
            raise NoSensor(f"{ipmitool} not found on PATH (install ipmitool)")
        self._cmd = [exe]
        self._env = dict(os.environ)
        if host:
            creds = creds or credentials()
            self._cmd += ["-I", "lanplus", "-H", host, "-U", creds.username, "-E"]
            if port:
                self._cmd += ["-p", str(port)]
            self._env["IPMI_PASSWORD"] = creds.password
        self._cmd += ["dcmi", "power", "reading"]
        self._clock = clock_ns
        where = host or "local"
        super().__init__(f"ipmi-{where}", f"node:{where}",
                         f"IPMI DCMI power reading ({where})", "power_integration",
                         self._read, period_s, max_gap_s, clock_ns)
        self.start()

    def _read(self) -> Sample:
        t_send = self._clock()
        try:
            p = subprocess.run(self._cmd, capture_output=True, text=True, env=self._env,
                               timeout=REQUEST_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            raise SensorError(f"{self.name}: ipmitool gave no answer within "
                              f"{REQUEST_TIMEOUT_S:g} s") from None
        except OSError as exc:
            raise SensorError(f"{self.name}: cannot run ipmitool ({exc})") from None
        t_recv = self._clock()
        t = (t_send + t_recv) // 2
        m = _IPMI_POWER.search(p.stdout)
        if p.returncode != 0 or not m:
            last = (p.stderr.strip().splitlines() or p.stdout.strip().splitlines() or [""])[-1]
            raise SensorError(f"{self.name}: no power reading (exit {p.returncode}) {last}"
                              .rstrip())
        return Sample(t, float(m.group(1)), None, (t_recv - t_send) / _NS)


def open_source(url: str, *, insecure: bool = False, ca_file: str | None = None,
                credentials_file: str | None = None,
                period_s: float = DEFAULT_PERIOD_S) -> SampledNodeSource:
    """A started node-power source for ``redfish://...`` or ``ipmi://...``.

    Raises:
        BenchError: a bad address or credentials (configuration: stop the run).
        NoSensor: the BMC cannot be reached or reports no power (record null + reason).
    """
    scheme = urlsplit(url).scheme
    if scheme == "redfish":
        return RedfishNodeSource(url, credentials(credentials_file), insecure, ca_file,
                                 period_s)
    if scheme == "ipmi":
        creds = credentials(credentials_file) if urlsplit(url).hostname else None
        return IpmiNodeSource(url, creds, period_s)
    raise BenchError(f"BMC address {url!r}: use redfish://BMC[:PORT][/CHASSIS] or "
                     "ipmi://[BMC[:PORT]]")
