"""The partner client: one method per RPC of the wire contract (DESIGN §3).

Thread-safety: a Client holds one nng REQ socket; every call opens an nng
context of its own on it, so any number of threads may call one Client at
once (no lock is held while waiting for a reply).
"""
import importlib.util
import os
import random
import sys
import time
import uuid

from . import _nng
from .errors import DeadlineExceeded, Internal, Unavailable, error_for


def _import_stubs():
    from grpc.health.v1 import health_pb2
    from mhs.rpc.v1 import rpc_pb2
    from mhs.v1 import admin_pb2, prescriptions_pb2
    return rpc_pb2, prescriptions_pb2, admin_pb2, health_pb2


def _load_stubs():
    """The generated protobuf modules: from sys.path, else $MHS_PYTHON_GEN,
    else this checkout's build/clients/python/gen."""
    if importlib.util.find_spec("google") is None or \
            importlib.util.find_spec("google.protobuf") is None:
        raise ImportError("mhs_client needs python3-protobuf: run it with "
                          "Debian's /usr/bin/python3")
    try:
        return _import_stubs()
    except ImportError:
        pass
    here = os.path.dirname(os.path.abspath(__file__))
    for d in (os.environ.get("MHS_PYTHON_GEN"),
              os.path.join(here, "..", "..", "..", "build", "clients", "python", "gen")):
        if d and os.path.isfile(os.path.join(d, "mhs", "rpc", "v1", "rpc_pb2.py")):
            sys.path.append(os.path.abspath(d))
            return _import_stubs()
    raise ImportError("mhs_client: generated protobuf modules not found; build "
                      "the project, or run protoc --python_out=DIR and set "
                      "MHS_PYTHON_GEN=DIR (see clients/python/README.md)")


rpc_pb2, prescriptions_pb2, admin_pb2, health_pb2 = _load_stubs()
MessageState = prescriptions_pb2.MessageState
SERVING = health_pb2.HealthCheckResponse.SERVING
FINAL_STATES = frozenset({
    MessageState.MESSAGE_STATE_DELIVERED, MessageState.MESSAGE_STATE_RESPONDED,
    MessageState.MESSAGE_STATE_FAILED, MessageState.MESSAGE_STATE_EXPIRED})

_BACKOFF_FIRST_S, _BACKOFF_MAX_S = 0.05, 1.0


def state_name(state):
    """"DELIVERED" for MESSAGE_STATE_DELIVERED (4), and so on."""
    return MessageState.Name(state).replace("MESSAGE_STATE_", "")


def _state_value(state):
    if isinstance(state, str):
        name = state.upper()
        return MessageState.Value(name if name.startswith("MESSAGE_STATE_")
                                  else "MESSAGE_STATE_" + name)
    return int(state)


class Client:
    """A connection to one mhs-gateway.

    url defaults to $MHS_GATEWAY_URL and token to $MHS_TOKEN. timeout_ms is
    the default deadline of each call, retries included; each attempt waits
    at most attempt_timeout_ms (default: half the call's deadline, at least
    1 s) so that a lost request is sent again within the deadline.
    """

    def __init__(self, url=None, token=None, timeout_ms=10000,
                 attempt_timeout_ms=None):
        url = url or os.environ.get("MHS_GATEWAY_URL")
        if not url:
            raise ValueError("no gateway URL: pass url= or set MHS_GATEWAY_URL")
        self.url = url
        self._token = token if token is not None else os.environ.get("MHS_TOKEN")
        self.timeout_ms = timeout_ms
        self.attempt_timeout_ms = attempt_timeout_ms
        try:
            self._sock = _nng.ReqSocket(url)
        except _nng.NngError as e:
            raise ValueError(f"gateway URL {url!r}: {e}") from None

    def __repr__(self):  # never shows the token
        return f"Client(url={self.url!r})"

    def close(self):
        self._sock.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ---- mhs.v1.Prescriptions ----

    def submit(self, *, idempotency_key, interaction_id, prescription_id,
               nhs_number, sender_ods, payload, recipient_ods="",
               content_type="", timeout_ms=None):
        """Submit one message; returns SubmitResponse (message_id, state,
        duplicate, accepted_at_ms). Retried with the same idempotency_key,
        so a retry of a Submit that did land answers duplicate=True."""
        if not idempotency_key:
            raise ValueError("idempotency_key is required")
        if isinstance(payload, str):
            payload = payload.encode()
        req = prescriptions_pb2.SubmitRequest(
            idempotency_key=idempotency_key, interaction_id=interaction_id,
            prescription_id=prescription_id, nhs_number=nhs_number,
            sender_ods=sender_ods, recipient_ods=recipient_ods,
            content_type=content_type, payload=payload)
        return self._call("/mhs.v1.Prescriptions/Submit", req,
                          prescriptions_pb2.SubmitResponse, timeout_ms)

    def get_status(self, message_id, *, timeout_ms=None):
        """The MessageStatus of one message (NotFound when unknown)."""
        req = prescriptions_pb2.GetStatusRequest(message_id=message_id)
        return self._call("/mhs.v1.Prescriptions/GetStatus", req,
                          prescriptions_pb2.MessageStatus, timeout_ms)

    def search(self, *, prescription_id="", nhs_number="", sender_ods="",
               state=0, since_ms=0, until_ms=0, page_size=0, page_token="",
               timeout_ms=None):
        """One page of matches (SearchResponse); state may be a number or a
        name such as "DELIVERED"."""
        req = prescriptions_pb2.SearchRequest(
            prescription_id=prescription_id, nhs_number=nhs_number,
            sender_ods=sender_ods, state=_state_value(state),
            since_ms=since_ms, until_ms=until_ms, page_size=page_size,
            page_token=page_token)
        return self._call("/mhs.v1.Prescriptions/Search", req,
                          prescriptions_pb2.SearchResponse, timeout_ms)

    # ---- mhs.v1.Admin (admin clients only) ----

    def list_dead_letters(self, *, page_size=0, page_token="", timeout_ms=None):
        req = admin_pb2.ListDeadLettersRequest(page_size=page_size,
                                               page_token=page_token)
        return self._call("/mhs.v1.Admin/ListDeadLetters", req,
                          admin_pb2.ListDeadLettersResponse, timeout_ms)

    def redeliver(self, message_ids, *, timeout_ms=None):
        """Requeue dead-lettered messages; never retried (per-message
        results would be misleading on a repeat)."""
        req = admin_pb2.RedeliverRequest(message_ids=list(message_ids))
        return self._call("/mhs.v1.Admin/Redeliver", req,
                          admin_pb2.RedeliverResponse, timeout_ms, retry=False)

    # ---- grpc.health.v1 ----

    def health(self, service="", *, timeout_ms=None):
        """HealthCheckResponse; .status == SERVING when it can take work."""
        req = health_pb2.HealthCheckRequest(service=service)
        return self._call("/grpc.health.v1.Health/Check", req,
                          health_pb2.HealthCheckResponse, timeout_ms)

    # ---- helpers ----

    def wait_final(self, message_id, *, timeout_ms=60000, interval_ms=100):
        """Poll GetStatus until the message is DELIVERED, RESPONDED, FAILED
        or EXPIRED; returns that MessageStatus, or raises DeadlineExceeded
        (naming the last state seen) after timeout_ms."""
        deadline = time.monotonic() + timeout_ms / 1000.0
        while True:
            left = int((deadline - time.monotonic()) * 1000)
            st = self.get_status(message_id, timeout_ms=max(1, min(left, self.timeout_ms)))
            if st.state in FINAL_STATES:
                return st
            if time.monotonic() + interval_ms / 1000.0 >= deadline:
                raise DeadlineExceeded(4, f"message {message_id} still "
                                       f"{state_name(st.state)} after {timeout_ms} ms")
            time.sleep(interval_ms / 1000.0)

    def _call(self, method, request, reply_cls, timeout_ms=None, retry=True):
        timeout_ms = timeout_ms or self.timeout_ms
        per_attempt = self.attempt_timeout_ms or max(1000, timeout_ms // 2)
        deadline = time.monotonic() + timeout_ms / 1000.0
        request_id = str(uuid.uuid4())
        env = rpc_pb2.Request(method=method, payload=request.SerializeToString())
        env.metadata["x-request-id"] = request_id
        if self._token:
            env.metadata["authorization"] = "Bearer " + self._token
        backoff = _BACKOFF_FIRST_S
        while True:
            budget = min(per_attempt, int((deadline - time.monotonic()) * 1000))
            if budget <= 0:
                raise DeadlineExceeded(4, f"{method}: no answer within {timeout_ms} ms",
                                       request_id)
            env.timeout_ms = budget
            try:
                raw = self._sock.request(env.SerializeToString(), budget)
            except _nng.NngError as e:
                if e.errno != _nng.ETIMEDOUT:
                    raise Unavailable(14, f"{method} to {self.url}: {e}", request_id) from None
                err = DeadlineExceeded(4, f"{method}: no reply from {self.url} within "
                                       f"{budget} ms (is the gateway running?)", request_id)
            else:
                err = self._decode(raw, reply_cls, request_id)
                if not isinstance(err, Exception):
                    return err
            # 14 means not done, try again; 4 (from us or the gateway) is
            # retried only while the call's own deadline has time left.
            if not retry or err.code not in (4, 14):
                raise err
            if time.monotonic() + backoff >= deadline:
                raise err
            time.sleep(backoff * random.uniform(0.5, 1.0))
            backoff = min(backoff * 2, _BACKOFF_MAX_S)

    @staticmethod
    def _decode(raw, reply_cls, request_id):
        """The reply message, or the exception to raise for it."""
        resp = rpc_pb2.Response()
        try:
            resp.ParseFromString(raw)
        except Exception:  # google.protobuf.message.DecodeError
            return Internal(13, "reply is not an mhs.rpc.v1.Response", request_id)
        request_id = resp.metadata.get("x-request-id", request_id)
        if resp.code != 0:
            return error_for(resp.code, resp.message, request_id, resp.metadata)
        out = reply_cls()
        try:
            out.ParseFromString(resp.payload)
        except Exception:
            return Internal(13, f"reply payload is not a {reply_cls.DESCRIPTOR.full_name}",
                            request_id)
        return out
