"""Count Ray Client connects that fail because the head's server for them died at fork.

    python scripts/ray_client_fork_race.py on|off N

Starts a one-node Ray head with a Ray Client server (``off``: with
``GRPC_ENABLE_FORK_SUPPORT=0``, gRPC's fork handlers off), connects to it ``N`` times
through ``ray://`` from a fresh process each, and prints each connect's outcome and time,
then the count of failed connects and of "SpecificServer startup failed" in the proxier's
log (ray-project/ray#63202). Run it beside a CPU hog to see the race; the README's figures
came from ``on 15, off 15, on 15, off 15`` beside two ``while True: pass`` processes.
"""

from __future__ import annotations

import glob
import os
import socket
import subprocess
import sys
import time

CONNECT = "import ray, sys; ray.init(address=sys.argv[1], log_to_driver=False); ray.shutdown()"


def main(argv: list[str]) -> int:
    """Run the count; 2 on bad arguments."""
    if len(argv) != 2 or argv[0] not in ("on", "off") or not argv[1].isdigit():
        print("usage: ray_client_fork_race.py on|off N", file=sys.stderr)
        return 2
    arm, n = argv[0], int(argv[1])
    os.environ["RAY_CLIENT_SERVER_CHECK_CHANNEL_TIMEOUT_S"] = "20"  # a failure costs ~30 s
    if arm == "off":
        os.environ["GRPC_ENABLE_FORK_SUPPORT"] = "0"
    from ray.cluster_utils import Cluster

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "num_gpus": 0, "ray_client_server_port": port})
    os.environ.pop("GRPC_ENABLE_FORK_SUPPORT", None)  # the clients run as a user's would
    fails, times_s = 0, []
    try:
        for i in range(n):
            t0 = time.monotonic()
            r = subprocess.run([sys.executable, "-c", CONNECT, f"ray://127.0.0.1:{port}"],
                               capture_output=True, text=True)
            dt_s = time.monotonic() - t0
            times_s.append(dt_s)
            if r.returncode:
                fails += 1
                last = (r.stderr.strip().splitlines() or ["?"])[-1][:150]
                print(f"{arm} {i}: FAIL {dt_s:.1f} s {last}", flush=True)
            else:
                print(f"{arm} {i}: ok {dt_s:.1f} s", flush=True)
        session = max(glob.glob("/tmp/ray/session_2*"), key=os.path.getmtime)
        with open(f"{session}/logs/ray_client_server.err") as f:
            died = f.read().count("SpecificServer startup failed")
        ok_s = sorted(t for t in times_s)
        print(f"ARM {arm}: {fails} of {n} connects failed; proxier 'SpecificServer startup "
              f"failed' {died}; median {ok_s[len(ok_s) // 2]:.1f} s, max {ok_s[-1]:.1f} s",
              flush=True)
    finally:
        cluster.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
