"""mhs_client without a stack: identifier check digits, error mapping, and
retry semantics against a scripted fake gateway (nng REP over ipc)."""
import ctypes
import random
import shutil
import tempfile
import threading
import time
import unittest

import mhs_client as m
from mhs_client import _nng
from mhs_client.client import prescriptions_pb2, rpc_pb2


class Identifiers(unittest.TestCase):
    def test_spine_example_prescription_id(self):
        self.assertEqual(m.mod37_2_check_char("04F4C2-A99968-7F717"), "P")
        self.assertTrue(m.is_valid_prescription_id("04F4C2-A99968-7F717P"))
        self.assertTrue(m.is_valid_prescription_id("04f4c2-A99968-7f717p"))

    def test_bad_prescription_ids(self):
        for s in ("04F4C2-A99968-7F717Q", "04F4C2A99968-7F717P-",
                  "04F4C2-a99968-7F717P", "G4F4C2-A99968-7F717P", "", None):
            self.assertFalse(m.is_valid_prescription_id(s), s)

    def test_generated_prescription_ids_validate(self):
        rng = random.Random(1)
        for ods in ("A99968", "FA565", "Y1"):
            for _ in range(200):
                rx = m.make_prescription_id(ods, rng=rng)
                self.assertTrue(m.is_valid_prescription_id(rx), rx)
                self.assertEqual(rx[7:13], ods.rjust(6, "0"))
        with self.assertRaises(ValueError):
            m.make_prescription_id("TOOLONG1")

    def test_nhs_numbers(self):
        self.assertTrue(m.is_valid_nhs_number("9434765919"))
        self.assertFalse(m.is_valid_nhs_number("9434765918"))
        self.assertFalse(m.is_valid_nhs_number("943476591"))
        self.assertFalse(m.is_valid_nhs_number("943476591x"))
        self.assertIsNone(m.nhs_check_digit("100000001"))  # check would be 10
        self.assertEqual(m.nhs_check_digit("000000001"), 9)
        self.assertEqual(m.nhs_check_digit("000000000"), 0)  # 11 means 0

    def test_generated_nhs_numbers_validate(self):
        rng = random.Random(2)
        for _ in range(500):
            n = m.make_nhs_number(rng=rng)
            self.assertTrue(m.is_valid_nhs_number(n))
            self.assertTrue(n.startswith("999"))


class Errors(unittest.TestCase):
    def test_codes_map_to_classes(self):
        for code, cls in ((3, m.InvalidArgument), (4, m.DeadlineExceeded),
                          (5, m.NotFound), (6, m.AlreadyExists),
                          (7, m.PermissionDenied), (8, m.ResourceExhausted),
                          (12, m.Unimplemented), (13, m.Internal),
                          (14, m.Unavailable), (16, m.Unauthenticated)):
            e = m.error_for(code, "why", "rid-1")
            self.assertIs(type(e), cls)
            self.assertIsInstance(e, m.MhsError)
            self.assertEqual((e.code, e.message, e.request_id), (code, "why", "rid-1"))
        self.assertIs(type(m.error_for(9, "x")), m.MhsError)

    def test_retry_after(self):
        e = m.error_for(8, "slow down", metadata={"retry-after-ms": "250"})
        self.assertEqual(e.retry_after_ms, 250)
        self.assertIsNone(m.error_for(8, "slow down").retry_after_ms)

    def test_state_names(self):
        self.assertEqual(m.state_name(m.MessageState.MESSAGE_STATE_DELIVERED), "DELIVERED")


class FakeGateway:
    """A REP socket answering each request with script(request) -> Response
    (None: no answer). Requests seen are kept in .requests."""

    def __init__(self, script):
        lib = _nng._nng()
        for name, res, args in (
                ("nng_rep0_open", ctypes.c_int, [ctypes.POINTER(_nng.Socket)]),
                ("nng_listen", ctypes.c_int, [_nng.Socket, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_int]),
                ("nng_recv", ctypes.c_int, [_nng.Socket, ctypes.c_void_p, ctypes.POINTER(ctypes.c_size_t), ctypes.c_int]),
                ("nng_send", ctypes.c_int, [_nng.Socket, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int]),
                ("nng_free", None, [ctypes.c_void_p, ctypes.c_size_t])):
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = res, args
        self.lib, self.script, self.requests = lib, script, []
        self.dir = tempfile.mkdtemp(prefix="mhs-py-fake-")
        self.url = f"ipc://{self.dir}/gw.ipc"
        self.sock = _nng.Socket()
        assert lib.nng_rep0_open(ctypes.byref(self.sock)) == 0
        assert lib.nng_listen(self.sock, self.url.encode(), None, 0) == 0
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            buf, size = ctypes.c_void_p(), ctypes.c_size_t()
            if self.lib.nng_recv(self.sock, ctypes.byref(buf), ctypes.byref(size), 1) != 0:
                return  # closed
            req = rpc_pb2.Request.FromString(ctypes.string_at(buf, size.value))
            self.lib.nng_free(buf, size)
            self.requests.append(req)
            resp = self.script(req)
            if resp is not None:
                out = resp.SerializeToString()
                self.lib.nng_send(self.sock, out, len(out), 0)

    def close(self):
        self.lib.nng_close(self.sock)
        self.thread.join(5)
        shutil.rmtree(self.dir, ignore_errors=True)


def answers(*codes):
    """A script answering the given codes in turn, then OK for ever;
    None drops that request."""
    left = list(codes)

    def script(req):
        code = left.pop(0) if left else 0
        if code is None:
            return None
        if code:
            return rpc_pb2.Response(code=code, message=f"code {code}",
                                    metadata={"retry-after-ms": "250"})
        ok = prescriptions_pb2.SubmitResponse(message_id="A-B", duplicate=True)
        return rpc_pb2.Response(payload=ok.SerializeToString(),
                                metadata={"x-request-id": req.metadata["x-request-id"]})
    return script


class Retries(unittest.TestCase):
    SUBMIT = dict(idempotency_key="key-1", interaction_id="PORX_IN020101SM31",
                  prescription_id="04F4C2-A99968-7F717P", nhs_number="9434765919",
                  sender_ods="FA565", payload=b"<x/>")

    def gateway(self, *codes):
        gw = FakeGateway(answers(*codes))
        self.addCleanup(gw.close)
        return gw

    def test_unavailable_is_retried_with_the_same_request(self):
        gw = self.gateway(14, 14)
        with m.Client(gw.url, "tok", timeout_ms=5000) as c:
            r = c.submit(**self.SUBMIT)
        self.assertEqual(r.message_id, "A-B")
        self.assertEqual(len(gw.requests), 3)
        first = gw.requests[0]
        self.assertEqual(first.method, "/mhs.v1.Prescriptions/Submit")
        self.assertEqual(first.metadata["authorization"], "Bearer tok")
        sub = prescriptions_pb2.SubmitRequest.FromString(first.payload)
        self.assertEqual(sub.idempotency_key, "key-1")
        for req in gw.requests[1:]:
            self.assertEqual(req.payload, first.payload)
            self.assertEqual(dict(req.metadata), dict(first.metadata))
            self.assertLessEqual(req.timeout_ms, first.timeout_ms)

    def test_deadline_bounds_the_retries(self):
        gw = self.gateway(*[14] * 1000)
        with m.Client(gw.url, "tok", timeout_ms=600) as c:
            t0 = time.monotonic()
            with self.assertRaises(m.Unavailable):
                c.get_status("A-B")
            self.assertLess(time.monotonic() - t0, 1.0)
        self.assertGreater(len(gw.requests), 1)

    def test_lost_reply_is_retried_within_the_deadline(self):
        gw = self.gateway(None)
        with m.Client(gw.url, "tok", timeout_ms=3000, attempt_timeout_ms=300) as c:
            self.assertEqual(c.submit(**self.SUBMIT).message_id, "A-B")
        self.assertEqual(len(gw.requests), 2)

    def test_redeliver_and_other_errors_are_not_retried(self):
        gw = self.gateway(14, 8)
        with m.Client(gw.url, "tok", timeout_ms=3000) as c:
            with self.assertRaises(m.Unavailable):
                c.redeliver(["A-B"])
            with self.assertRaises(m.ResourceExhausted) as cm:
                c.health()
        self.assertEqual(cm.exception.retry_after_ms, 250)
        self.assertEqual(len(gw.requests), 2)

    def test_missing_idempotency_key(self):
        with m.Client("ipc:///nonexistent/gw.ipc", "tok") as c:
            with self.assertRaises(ValueError):
                c.submit(**dict(self.SUBMIT, idempotency_key=""))


if __name__ == "__main__":
    unittest.main()
