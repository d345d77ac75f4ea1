"""The few nng 1.5.2 calls a REQ client needs, through ctypes.

nng_socket and nng_ctx are structs holding a uint32 id and are passed by
value; nng_aio and nng_msg are opaque pointers. Each request runs on a
context of its own (nng_ctx_open), so concurrent calls share one socket
without a lock; ctypes releases the GIL while nng_aio_wait blocks.
"""
import ctypes
import threading
import time

ETIMEDOUT = 5
ECLOSED = 7
_FLAG_NONBLOCK = 2
_DURATION_INFINITE = -1
_OPT_REQ_RESENDTIME = b"req:resend-time"
_OPT_RECVMAXSZ = b"recv-size-max"
_RECV_MAX = 64 << 20


class _Id(ctypes.Structure):
    _fields_ = [("id", ctypes.c_uint32)]


class Socket(_Id):
    pass


class Ctx(_Id):
    pass


_P = ctypes.c_void_p
_SIGNATURES = {
    # name: (restype, argtypes)
    "nng_req0_open": (ctypes.c_int, [ctypes.POINTER(Socket)]),
    "nng_dial": (ctypes.c_int, [Socket, ctypes.c_char_p, _P, ctypes.c_int]),
    "nng_close": (ctypes.c_int, [Socket]),
    "nng_socket_set_ms": (ctypes.c_int, [Socket, ctypes.c_char_p, ctypes.c_int32]),
    "nng_socket_set_size": (ctypes.c_int, [Socket, ctypes.c_char_p, ctypes.c_size_t]),
    "nng_ctx_open": (ctypes.c_int, [ctypes.POINTER(Ctx), Socket]),
    "nng_ctx_close": (ctypes.c_int, [Ctx]),
    "nng_ctx_set_ms": (ctypes.c_int, [Ctx, ctypes.c_char_p, ctypes.c_int32]),
    "nng_ctx_send": (None, [Ctx, _P]),
    "nng_ctx_recv": (None, [Ctx, _P]),
    "nng_aio_alloc": (ctypes.c_int, [ctypes.POINTER(_P), _P, _P]),
    "nng_aio_free": (None, [_P]),
    "nng_aio_set_timeout": (None, [_P, ctypes.c_int32]),
    "nng_aio_set_msg": (None, [_P, _P]),
    "nng_aio_get_msg": (_P, [_P]),
    "nng_aio_wait": (None, [_P]),
    "nng_aio_result": (ctypes.c_int, [_P]),
    "nng_msg_alloc": (ctypes.c_int, [ctypes.POINTER(_P), ctypes.c_size_t]),
    "nng_msg_free": (None, [_P]),
    "nng_msg_append": (ctypes.c_int, [_P, ctypes.c_char_p, ctypes.c_size_t]),
    "nng_msg_body": (_P, [_P]),
    "nng_msg_len": (ctypes.c_size_t, [_P]),
    "nng_strerror": (ctypes.c_char_p, [ctypes.c_int]),
}
_lib = None
_lib_lock = threading.Lock()


def _nng():
    global _lib
    with _lib_lock:
        if _lib is None:
            lib = ctypes.CDLL("libnng.so.1")
            for name, (res, args) in _SIGNATURES.items():
                fn = getattr(lib, name)
                fn.restype, fn.argtypes = res, args
            _lib = lib
    return _lib


class NngError(Exception):
    """An nng call failed; errno is nng's error number (5 = timed out)."""

    def __init__(self, errno, what):
        self.errno = errno
        text = _nng().nng_strerror(errno).decode(errors="replace")
        super().__init__(f"{what}: {text}")


def _check(rv, what):
    if rv != 0:
        raise NngError(rv, what)


class ReqSocket:
    """A REQ socket dialled (in the background, reconnecting) to one URL."""

    def __init__(self, url):
        lib = _nng()
        self._sock = Socket()
        self._closed = False
        self._lock = threading.Lock()
        _check(lib.nng_req0_open(ctypes.byref(self._sock)), "nng_req0_open")
        try:
            # Never resend on nng's own 60 s timer: our retries decide.
            _check(lib.nng_socket_set_ms(self._sock, _OPT_REQ_RESENDTIME,
                                         _DURATION_INFINITE), "resend-time")
            _check(lib.nng_socket_set_size(self._sock, _OPT_RECVMAXSZ,
                                           _RECV_MAX), "recv-size-max")
            # Non-blocking: a gateway that is not up yet is dialled again
            # until it is; calls wait for it within their deadline.
            _check(lib.nng_dial(self._sock, url.encode(), None, _FLAG_NONBLOCK),
                   f"nng_dial {url}")
        except BaseException:
            lib.nng_close(self._sock)
            raise

    def request(self, data, timeout_ms):
        """Send data, return the reply's bytes; NngError(ETIMEDOUT) when
        no reply arrives within timeout_ms."""
        lib = _nng()
        deadline = time.monotonic() + timeout_ms / 1000.0
        ctx, aio, msg = Ctx(), _P(), _P()
        _check(lib.nng_ctx_open(ctypes.byref(ctx), self._sock), "nng_ctx_open")
        try:
            lib.nng_ctx_set_ms(ctx, _OPT_REQ_RESENDTIME, _DURATION_INFINITE)
            _check(lib.nng_aio_alloc(ctypes.byref(aio), None, None), "nng_aio_alloc")
            _check(lib.nng_msg_alloc(ctypes.byref(msg), 0), "nng_msg_alloc")
            rv = lib.nng_msg_append(msg, data, len(data))
            if rv != 0:
                lib.nng_msg_free(msg)
                raise NngError(rv, "nng_msg_append")
            lib.nng_aio_set_msg(aio, msg)
            lib.nng_aio_set_timeout(aio, _left_ms(deadline))
            lib.nng_ctx_send(ctx, aio)
            lib.nng_aio_wait(aio)
            rv = lib.nng_aio_result(aio)
            if rv != 0:  # the message is still ours
                unsent = lib.nng_aio_get_msg(aio)
                if unsent:
                    lib.nng_msg_free(unsent)
                raise NngError(rv, "send")
            lib.nng_aio_set_timeout(aio, _left_ms(deadline))
            lib.nng_ctx_recv(ctx, aio)
            lib.nng_aio_wait(aio)
            _check(lib.nng_aio_result(aio), "receive")
            reply = lib.nng_aio_get_msg(aio)
            try:
                return ctypes.string_at(lib.nng_msg_body(reply),
                                        lib.nng_msg_len(reply))
            finally:
                lib.nng_msg_free(reply)
        finally:
            if aio:
                lib.nng_aio_free(aio)
            lib.nng_ctx_close(ctx)

    def close(self):
        with self._lock:
            if not self._closed:
                self._closed = True
                _nng().nng_close(self._sock)


def _left_ms(deadline):
    # At least 1 ms: 0 would mean "do not wait at all" to nng.
    return max(1, int((deadline - time.monotonic()) * 1000))
