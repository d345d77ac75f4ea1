"""mhs_client against a real stack (scripts/run --bin), end to end.

Environment (set by ctest): MHS_SOURCE_DIR (the checkout), MHS_BUILD_DIR
(the programs), PYTHONPATH (the generated stubs and mhs_client). Every wait
is bounded and polls a condition; a failure keeps the stack's directory
(logs in DIR/logs, scripts/run's output in DIR/run.out) and names it.
"""
import concurrent.futures
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import uuid

import mhs_client as m

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.environ.get("MHS_SOURCE_DIR") or os.path.abspath(os.path.join(HERE, "../../.."))
BUILD = os.environ.get("MHS_BUILD_DIR") or os.path.join(SOURCE, "build")
ROUTERS = 2
MESSAGE_ID = re.compile(r"[0-9A-F]{8}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{4}-[0-9A-F]{12}\Z")


def port_free(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def free_port_base(n):
    """n consecutive free ports below the kernel's ephemeral range, so that
    no outgoing connection of the stack can take one of them first."""
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        lo = int(f.read().split()[0])
    top = lo - n - 1 if lo - n - 1 > 12000 else 20000
    rng = random.Random(os.getpid() ^ time.time_ns())
    for _ in range(200):
        base = rng.randrange(10000, top)
        if all(port_free(base + i) for i in range(n)):
            return base
    raise RuntimeError(f"no {n} consecutive free ports below {lo}")


def read_env(path):
    env = {}
    with open(path) as f:
        for line in f:
            key, sep, value = line.rstrip("\n").partition("=")
            if sep and key.startswith("MHS_") and key != "MHS_ENV_EXPORT":
                env[key] = value
    return env


def tail(path, lines=30):
    try:
        with open(path, errors="replace") as f:
            return "".join(f.readlines()[-lines:])
    except OSError:
        return ""


class ClientAgainstStack(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="mhs-py-")
        cls.run_out = os.path.join(cls.dir, "run.out")
        base = free_port_base(5 + ROUTERS)
        with open(cls.run_out, "wb") as out:
            cls.proc = subprocess.Popen(
                ["/bin/bash", os.path.join(SOURCE, "scripts/run"), "--dir", cls.dir,
                 "--port-base", str(base), "--routers", str(ROUTERS), "--bin", BUILD],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)  # own process group
        cls.addClassCleanup(cls.stop_stack)
        env_path = os.path.join(cls.dir, "stack.env")
        deadline = time.monotonic() + 120  # sanitizer builds start slowly
        while not os.path.exists(env_path):
            if cls.proc.poll() is not None:
                raise RuntimeError(f"scripts/run exited ({cls.proc.returncode}) before "
                                   f"writing stack.env:\n{tail(cls.run_out)}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"stack.env did not appear in 120 s; see {cls.run_out}")
            time.sleep(0.1)
        cls.env = read_env(env_path)
        cls.client = m.Client(cls.env["MHS_GATEWAY_URL"], cls.env["MHS_TOKEN"])

    @classmethod
    def stop_stack(cls):
        """SIGTERM scripts/run; it must stop every process and exit 0."""
        if getattr(cls, "client", None):
            cls.client.close()
        pids_dir = os.path.join(cls.dir, "pids")
        pids = []
        for name in os.listdir(pids_dir) if os.path.isdir(pids_dir) else []:
            with open(os.path.join(pids_dir, name)) as f:
                pids.append(int(f.read().strip() or 0))
        cls.proc.send_signal(signal.SIGTERM)
        try:
            rc = cls.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(cls.proc.pid, signal.SIGKILL)
            cls.proc.wait()
            raise AssertionError(f"scripts/run did not stop within 60 s; see {cls.dir}")
        alive = [p for p in pids if p > 0 and _alive(p)]
        if rc != 0 or alive:
            raise AssertionError(f"scripts/run exited {rc}, still running: {alive}; "
                                 f"see {cls.dir}\n{tail(cls.run_out)}")
        shutil.rmtree(cls.dir, ignore_errors=True)

    def fields(self, **over):
        f = dict(idempotency_key="py-" + str(uuid.uuid4()),
                 interaction_id="PORX_IN020101SM31",
                 prescription_id=m.make_prescription_id(),
                 nhs_number=m.make_nhs_number(), sender_ods="FA565",
                 recipient_ods="T1450", content_type="text/xml",
                 payload=f'<PORX_IN020101SM31 xmlns="urn:hl7-org:v3"><id root="{uuid.uuid4()}"/>'
                         '</PORX_IN020101SM31>')
        f.update(over)
        return f

    def assert_delivered(self, message_id):
        st = self.client.wait_final(message_id, timeout_ms=60000)
        self.assertEqual(m.state_name(st.state), "DELIVERED", st.last_error)
        self.assertEqual(st.message_id, message_id)

    def test_submit_delivered_then_repeat_is_duplicate(self):
        f = self.fields()
        r = self.client.submit(**f)
        self.assertRegex(r.message_id, MESSAGE_ID)
        self.assertFalse(r.duplicate)
        self.assertEqual(m.state_name(r.state), "ACCEPTED")
        self.assert_delivered(r.message_id)
        again = self.client.submit(**f)
        self.assertEqual(again.message_id, r.message_id)
        self.assertTrue(again.duplicate)
        with self.assertRaises(m.AlreadyExists):
            self.client.submit(**dict(f, payload=f["payload"] + " "))

    def test_invalid_nhs_number_names_the_field(self):
        good = m.make_nhs_number()
        bad = good[:9] + str((int(good[9]) + 1) % 10)
        with self.assertRaises(m.InvalidArgument) as cm:
            self.client.submit(**self.fields(nhs_number=bad))
        self.assertIn("nhs_number", cm.exception.message)
        self.assertNotIn(bad, str(cm.exception))
        self.assertTrue(cm.exception.request_id)

    def test_bad_token_is_unauthenticated(self):
        with m.Client(self.env["MHS_GATEWAY_URL"], "not-the-token", timeout_ms=5000) as c:
            with self.assertRaises(m.Unauthenticated):
                c.get_status(str(uuid.uuid4()).upper())

    def test_unknown_and_malformed_message_ids(self):
        with self.assertRaises(m.NotFound):
            self.client.get_status(str(uuid.uuid4()).upper())
        with self.assertRaises(m.InvalidArgument):
            self.client.get_status("not-a-message-id")

    def test_health(self):
        self.assertEqual(self.client.health().status, m.SERVING)
        self.assertEqual(self.client.health("mhs.v1.Prescriptions").status, m.SERVING)
        with self.assertRaises(m.NotFound):
            self.client.health("no.such.Service")

    def test_one_client_many_threads(self):
        ids = [self.client.submit(**self.fields()).message_id for _ in range(4)]
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            got = list(pool.map(lambda i: self.client.get_status(ids[i % 4]).message_id,
                                range(64)))
        self.assertEqual(got, [ids[i % 4] for i in range(64)])

    def test_unreachable_gateway_meets_the_deadline(self):
        url = f"tcp://127.0.0.1:{free_port_base(1)}"
        with m.Client(url, "t", timeout_ms=1500) as c:
            t0 = time.monotonic()
            with self.assertRaises(m.DeadlineExceeded):
                c.health()
            self.assertLess(time.monotonic() - t0, 3.0)

    def test_submit_rides_out_a_store_restart(self):
        # kill -9 the store; the supervisor restarts it and the Submit,
        # retried within its deadline, is answered once it is back.
        with open(os.path.join(self.env["MHS_PIDS_DIR"], "store.pid")) as f:
            os.kill(int(f.read()), signal.SIGKILL)
        r = self.client.submit(**self.fields(), timeout_ms=30000)
        self.assert_delivered(r.message_id)

    def test_example_script(self):
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        env.update(self.env, MHS_PYTHON_GEN=os.path.join(BUILD, "clients/python/gen"))
        p = subprocess.run(
            [sys.executable, os.path.join(HERE, "../examples/submit_and_wait.py"),
             "--wait-s", "60"], env=env, capture_output=True, text=True, timeout=120)
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)
        self.assertRegex(p.stdout, r"message_id [0-9A-F-]{36} DELIVERED")


def _alive(pid):
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False


if __name__ == "__main__":
    unittest.main()
