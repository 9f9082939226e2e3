"""Node power from a BMC: a stand-in Redfish service over HTTPS and a stand-in ipmitool.

The stand-ins serve a known power profile (steps, in W, on the monotonic clock); the
source's energy over an interval is compared with the profile's integral worked out by
hand. The error 1 s sampling allows: a power step of dP between two samples T apart is
integrated with an error of at most dP x T / 2 (linear interpolation across the step), so
the bound is sum(|dP|) x (T_max / 2 + latency) where T_max is the longest gap between the
source's samples and latency allows for when, between request and answer, the stand-in
read its clock. An energy counter is exact at the samples: only the two edges are
interpolated, and no step lies within a period of them, so the bound is latency x P_max
per edge. ``read_j`` (which answers at once, holding the last sample's power) meets the
same bound where, as here, no step lies within a period before an edge.
"""

import datetime
import ipaddress
import json
import os
import stat
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bench.devices import bmc
from bench.errors import BenchError, NoSensor, SensorError
from bench.meter import Meter

USER, PASSWORD = "admin", "s3cret"
LATENCY_S = 0.05  # how far the stand-in's clock read may sit from the sample's midpoint


class Profile:
    """Power steps (start s, W) from ``t0`` (monotonic s); ``scale`` stretches time."""

    def __init__(self, scale=1.0):
        self.t0 = time.monotonic()
        self.steps = [(0.0, 300.0), (2.5 * scale, 600.0), (4.5 * scale, 450.0)]

    def power_w(self, t):
        p = self.steps[0][1]
        for start, w in self.steps:
            if t - self.t0 >= start:
                p = w
        return p

    def energy_j(self, a, b):
        """The integral of the steps from a to b (monotonic s), piece by piece."""
        total = 0.0
        bounds = [s for s, _ in self.steps[1:]] + [float("inf")]
        for (start, w), end in zip(self.steps, bounds, strict=True):
            lo, hi = max(a - self.t0, start), min(b - self.t0, end)
            if hi > lo:
                total += w * (hi - lo)
        return total

    def bound_j(self, t_max_s, latency_s=LATENCY_S):
        dp = sum(abs(b[1] - a[1]) for a, b in zip(self.steps, self.steps[1:], strict=False))
        return dp * (t_max_s / 2 + latency_s)


def _certs(tmp_path):
    """A CA and a server certificate for 127.0.0.1 signed by it (PEM files)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def cert(subject, issuer, key, sign_key, ca):
        b = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
             .public_key(key.public_key()).serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(minutes=5))
             .not_valid_after(now + datetime.timedelta(days=1))
             .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
             .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                            critical=False))
        if not ca:
            b = b.add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        return b.sign(sign_key, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(
        ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stand-in BMC CA")])
    srv_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    ca = cert(ca_name, ca_name, ca_key, ca_key, True)
    srv = cert(srv_name, ca_name, key, ca_key, False)
    pem = serialization.Encoding.PEM
    (tmp_path / "ca.pem").write_bytes(ca.public_bytes(pem))
    (tmp_path / "srv.pem").write_bytes(srv.public_bytes(pem))
    (tmp_path / "srv.key").write_bytes(key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return tmp_path / "ca.pem", tmp_path / "srv.pem", tmp_path / "srv.key"


class StandInBmc:
    """A Redfish service on 127.0.0.1 (HTTPS) serving a :class:`Profile`.

    sessions: offer the session service (else 404: basic auth); counter: serve
    EnvironmentMetrics with EnergyJoules; stall / garbage: set to misbehave.
    """

    def __init__(self, tmp_path, profile, sessions=True, counter=False):
        import ssl

        self.profile, self.sessions, self.counter = profile, sessions, counter
        self.stall, self.garbage = threading.Event(), False
        self.released = threading.Event()
        self.log = []
        self.ca, cert, key = _certs(tmp_path)
        bmc_ = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def _send(self, status, doc=None, headers=(), raw=None):
                body = raw if raw is not None else json.dumps(doc or {}).encode()
                self.send_response(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _authorized(self):
                if self.headers.get("X-Auth-Token") == "tok-1" and bmc_.sessions:
                    return True
                import base64

                basic = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
                return not bmc_.sessions and self.headers.get("Authorization") == basic

            def do_POST(self):
                bmc_.log.append(("POST", self.path, self.headers.get("Authorization")))
                if not bmc_.sessions:
                    return self._send(404, {"error": "no session service"})
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if body != {"UserName": USER, "Password": PASSWORD}:
                    return self._send(401, {"error": "bad credentials"})
                self._send(201, {}, [("X-Auth-Token", "tok-1"),
                                     ("Location", "/redfish/v1/SessionService/Sessions/1")])

            def do_DELETE(self):
                bmc_.log.append(("DELETE", self.path, None))
                self._send(204 if self._authorized() else 401)

            def do_GET(self):
                bmc_.log.append(("GET", self.path, self.headers.get("Authorization")))
                if bmc_.stall.is_set():
                    bmc_.released.wait(10)  # a BMC that stopped answering
                    return
                if not self._authorized():
                    return self._send(401, {"error": "unauthorized"})
                now = time.monotonic()
                p = bmc_.profile.power_w(now)
                base = "/redfish/v1/Chassis/1U"
                if self.path == "/redfish/v1/Chassis":
                    return self._send(200, {"Members": [{"@odata.id": base}]})
                if self.path == base:
                    doc = {"Power": {"@odata.id": base + "/Power"}}
                    if bmc_.counter:
                        doc["EnvironmentMetrics"] = {"@odata.id": base + "/EnvironmentMetrics"}
                    return self._send(200, doc)
                if bmc_.garbage:
                    return self._send(200, raw=b"<html>BMC busy</html>")
                if self.path == base + "/Power":
                    return self._send(200, {"PowerControl": [{"PowerConsumedWatts": p}]})
                if self.path == base + "/EnvironmentMetrics" and bmc_.counter:
                    e = 1e6 + bmc_.profile.energy_j(bmc_.profile.t0, now)
                    return self._send(200, {"PowerWatts": {"Reading": p},
                                            "EnergyJoules": {"Reading": e}})
                self._send(404, {"error": "not found"})

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        # stops by itself, whatever the test does
        self.timer = threading.Timer(120, self.stop)
        self.timer.daemon = True
        self.timer.start()

    @property
    def url(self):
        return f"redfish://127.0.0.1:{self.port}"

    def stop(self):
        self.released.set()
        self.server.shutdown()
        self.server.server_close()
        self.timer.cancel()


@pytest.fixture
def standin(tmp_path):
    made = []

    def make(**kw):
        profile = kw.pop("profile", None) or Profile()
        s = StandInBmc(tmp_path, profile, **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()


CREDS = bmc.Credentials(USER, PASSWORD)


def _sleep_until(t0, rel_s):
    time.sleep(max(0.0, t0 + rel_s - time.monotonic()))


def _max_gap_s(src):
    ts = [s.t_ns for s in src.samples()]
    return max(b - a for a, b in zip(ts, ts[1:], strict=False)) / 1e9


def _latency_s(src):
    """Half the longest request: how far a sample's time may sit from the BMC's read."""
    return max(LATENCY_S, max(s.latency_s for s in src.samples()) / 2)


def test_redfish_power_integration_matches_the_profile(standin):
    bmc_ = standin()
    src = bmc.RedfishNodeSource(bmc_.url, CREDS, ca_file=str(bmc_.ca), period_s=1.0)
    try:
        assert (src.scope, src.method) == ("node", "power_integration")
        prof = bmc_.profile
        _sleep_until(prof.t0, 1.2)
        t0 = time.monotonic_ns()
        e0 = src.read_j()
        _sleep_until(prof.t0, 5.8)
        t1 = time.monotonic_ns()
        e1 = src.read_j()
        # after the window, the edges interpolated between the samples around them
        f0, f1 = src.energy_j_at(t0), src.energy_j_at(t1)
        truth = prof.energy_j(t0 / 1e9, t1 / 1e9)  # 300 x 1.3 + 600 x 2 + 450 x 1.3 = 2175 J
        t_max = _max_gap_s(src)
        assert t_max < 1.6  # sampled about once a second
        bound = prof.bound_j(t_max, _latency_s(src))  # 450 W x (T/2 + 0.05 s): ~250 J
        assert abs((f1 - f0) - truth) <= bound, (f1 - f0, truth, bound)
        # read_j holds the last sample's power past it: the load is level across both
        # edges (no step within a second before them), so the same bound holds, plus the
        # microseconds between the test's clock and read_j's
        assert abs((e1 - e0) - truth) <= bound + 600 * 0.01, (e1 - e0, truth, bound)
    finally:
        src.close()
    # a session was opened with the credentials in the body, and closed
    assert ("DELETE", "/redfish/v1/SessionService/Sessions/1", None) in bmc_.log
    assert all(auth is None for m, _, auth in bmc_.log)  # never basic auth with a session


def test_redfish_energy_counter(standin):
    bmc_ = standin(counter=True, profile=Profile(scale=0.4))
    src = bmc.RedfishNodeSource(bmc_.url, CREDS, ca_file=str(bmc_.ca), period_s=0.25)
    try:
        assert src.method == "counter"
        prof = bmc_.profile
        _sleep_until(prof.t0, 0.5)  # steps at 1.0 and 1.8 s: away from both edges
        t0 = time.monotonic_ns()
        _sleep_until(prof.t0, 2.4)
        t1 = time.monotonic_ns()
        e0, e1 = src.energy_j_at(t0), src.energy_j_at(t1)
        truth = prof.energy_j(t0 / 1e9, t1 / 1e9)  # 300 x 0.5 + 600 x 0.8 + 450 x 0.6 = 900
        assert abs((e1 - e0) - truth) <= 2 * 600 * _latency_s(src)
    finally:
        src.close()


def test_basic_auth_where_there_is_no_session_service(standin):
    bmc_ = standin(sessions=False, profile=Profile(scale=100))  # 300 W throughout
    with bmc.RedfishNodeSource(bmc_.url + "/1U", CREDS, ca_file=str(bmc_.ca),
                               period_s=0.2) as src:
        time.sleep(0.5)
        t0 = time.monotonic()
        e0 = src.read_j()
        time.sleep(0.6)
        t1 = time.monotonic()  # read_j takes its time at entry, then waits for a sample
        e1 = src.read_j()
    # constant power integrates exactly; the test's clock reads precede read_j's by < 10 ms
    assert (e1 - e0) == pytest.approx(300 * (t1 - t0), abs=300 * 0.01)
    gets = [auth for m, path, auth in bmc_.log if m == "GET"]
    assert gets and all(a and a.startswith("Basic ") for a in gets)


def test_refused_credentials_and_untrusted_certificates(standin):
    bmc_ = standin()
    with pytest.raises(BenchError, match="refused"):
        bmc.RedfishNodeSource(bmc_.url, bmc.Credentials(USER, "wrong"), ca_file=str(bmc_.ca))
    with pytest.raises(NoSensor, match="certificate"):  # verified by default
        bmc.RedfishNodeSource(bmc_.url, CREDS)
    src = bmc.RedfishNodeSource(bmc_.url, CREDS, insecure=True, period_s=0.2)
    try:
        assert "not verified" in src.description
        assert src.read_j() >= 0
    finally:
        src.close()


def test_a_bmc_that_stops_answering_gives_null_with_a_reason(standin):
    bmc_ = standin()
    src = bmc.RedfishNodeSource(bmc_.url, CREDS, ca_file=str(bmc_.ca), period_s=0.2,
                                max_gap_s=0.6)
    try:
        time.sleep(0.3)
        meter = Meter([src])
        with meter.window("w") as w:
            bmc_.stall.set()
            time.sleep(0.9)  # longer than max_gap_s without an answer
        r = w.result.readings[0]
        # the meter waits for a sample past the window's end, up to max_gap_s, in vain
        assert r.energy_j is None and "no BMC reading past the edge within 0.6 s" in r.reason
        assert (r.scope, r.method) == ("node", "power_integration")
        started = time.monotonic()
        with pytest.raises(SensorError, match="no BMC reading"):
            src.read_j()
        assert time.monotonic() - started < 0.1  # read_j never waits
        with pytest.raises(SensorError, match="past the edge"):  # nor past a later edge
            src.energy_j_at(time.monotonic_ns(), timeout_s=0.3)
    finally:
        bmc_.released.set()
        src.close()


def test_garbage_answers(standin):
    bmc_ = standin()
    src = bmc.RedfishNodeSource(bmc_.url, CREDS, ca_file=str(bmc_.ca), period_s=0.2,
                                max_gap_s=0.6)
    try:
        time.sleep(0.3)
        src.read_j()
        bmc_.garbage = True
        time.sleep(0.9)
        with pytest.raises(SensorError, match="not JSON"):
            src.read_j()
    finally:
        src.close()
    with pytest.raises(NoSensor, match="not JSON"):  # garbage from the start
        bmc.RedfishNodeSource(bmc_.url, CREDS, ca_file=str(bmc_.ca))


def test_addresses_and_credentials(tmp_path, monkeypatch):
    assert bmc.parse_redfish_url("redfish://bmc.lab:8443/Self") == bmc.RedfishTarget(
        "bmc.lab", 8443, "Self")
    assert bmc.parse_redfish_url("redfish://10.0.0.5") == bmc.RedfishTarget(
        "10.0.0.5", 443, None)
    for bad in ("https://bmc", "redfish://user:pw@bmc", "redfish://bmc/a/b",
                "redfish://bmc:port"):
        with pytest.raises(BenchError):
            bmc.parse_redfish_url(bad)
    assert bmc.parse_ipmi_url("ipmi://") == (None, None)
    assert bmc.parse_ipmi_url("ipmi://bmc:623") == ("bmc", 623)
    with pytest.raises(BenchError):
        bmc.open_source("snmp://bmc")
    env = {"BMC_USERNAME": "u", "BMC_PASSWORD": "hunter2"}
    assert bmc.credentials(environ=env) == bmc.Credentials("u", "hunter2")
    assert "hunter2" not in repr(bmc.credentials(environ=env))
    with pytest.raises(BenchError, match="BMC_USERNAME"):
        bmc.credentials(environ={})
    f = tmp_path / "bmc.toml"
    f.write_text('username = "root"\npassword = "pw"\n')
    f.chmod(stat.S_IRUSR | stat.S_IWUSR)
    assert bmc.credentials(environ={"BMC_CREDENTIALS_FILE": str(f)}).username == "root"
    f.chmod(0o644)
    with pytest.raises(BenchError, match="chmod 600"):
        bmc.credentials(f, environ={})


FAKE_IPMITOOL = """#!{python} -S
import json, os, sys, time
state = os.environ["FAKE_IPMI_STATE"]
with open(state + ".argv", "a") as f:
    f.write(json.dumps([sys.argv[1:], os.environ.get("IPMI_PASSWORD")]) + "\\n")
mode = open(state).read().strip() if os.path.exists(state) else ""
if mode == "stall":
    time.sleep(10)
if mode == "garbage":
    print("Error: unable to establish IPMI v2 / RMCP+ session", file=sys.stderr)
    sys.exit(1)
t0, scale = float(os.environ["FAKE_IPMI_T0"]), float(os.environ["FAKE_IPMI_SCALE"])
rel = time.monotonic() - t0
p = 300 if rel < 2.5 * scale else 600 if rel < 4.5 * scale else 450
print("    Instantaneous power reading:              %d Watts" % p)
print("    Minimum during sampling period:            10 Watts")
print("    Power reading state is:                   activated")
"""


@pytest.fixture
def ipmitool(tmp_path, monkeypatch):
    bindir = tmp_path / "bin"
    bindir.mkdir()
    exe = bindir / "ipmitool"
    exe.write_text(FAKE_IPMITOOL.replace("{python}", sys.executable))
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    state = tmp_path / "ipmi_state"
    monkeypatch.setenv("FAKE_IPMI_STATE", str(state))
    return state


def test_ipmi_power_integration_matches_the_profile(ipmitool, monkeypatch):
    prof = Profile(scale=0.5)  # steps at 1.25 and 2.25 s
    monkeypatch.setenv("FAKE_IPMI_T0", repr(prof.t0))
    monkeypatch.setenv("FAKE_IPMI_SCALE", "0.5")
    src = bmc.IpmiNodeSource("ipmi://", period_s=0.5)
    try:
        assert (src.scope, src.method) == ("node", "power_integration")
        _sleep_until(prof.t0, 0.6)
        t0 = time.monotonic_ns()
        _sleep_until(prof.t0, 2.9)
        t1 = time.monotonic_ns()
        e0, e1 = src.energy_j_at(t0), src.energy_j_at(t1)
        truth = prof.energy_j(t0 / 1e9, t1 / 1e9)  # 300 x 0.65 + 600 x 1 + 450 x 0.65 J
        # a subprocess per sample (slow on a busy machine): where in its run it read the
        # clock is known to half its duration, so that is the latency here
        t_max = _max_gap_s(src)
        bound = prof.bound_j(t_max, _latency_s(src))
        assert abs((e1 - e0) - truth) <= bound, (e1 - e0, truth, bound)
    finally:
        src.close()
    argv, password = json.loads((ipmitool.parent / "ipmi_state.argv").read_text()
                                .splitlines()[0])
    assert argv == ["dcmi", "power", "reading"] and password is None


def test_ipmi_remote_password_not_on_the_command_line_and_failures(ipmitool, monkeypatch):
    monkeypatch.setenv("FAKE_IPMI_T0", repr(time.monotonic()))
    monkeypatch.setenv("FAKE_IPMI_SCALE", "1")
    src = bmc.IpmiNodeSource("ipmi://10.1.2.3:623", bmc.Credentials("root", "pw!"),
                             period_s=0.2, max_gap_s=0.8)
    try:
        time.sleep(0.3)
        src.read_j()
        ipmitool.write_text("garbage")
        time.sleep(1.2)
        with pytest.raises(SensorError, match="no power reading|no BMC reading"):
            src.read_j()
    finally:
        src.close()
    argv, password = json.loads((ipmitool.parent / "ipmi_state.argv").read_text()
                                .splitlines()[0])
    assert argv == ["-I", "lanplus", "-H", "10.1.2.3", "-U", "root", "-E", "-p", "623",
                    "dcmi", "power", "reading"]
    assert password == "pw!" and "pw!" not in argv
    with pytest.raises(NoSensor, match="no power reading"):  # failing from the start
        bmc.IpmiNodeSource("ipmi://", period_s=0.2)
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(NoSensor, match="not found"):
        bmc.IpmiNodeSource("ipmi://")
