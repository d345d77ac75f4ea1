#!/usr/bin/python3
"""Submit one valid prescription message and wait until Spine has it.

    . run/stack.env                      # MHS_GATEWAY_URL, MHS_TOKEN
    /usr/bin/python3 clients/python/examples/submit_and_wait.py

Prints the message id and its final state. Exit codes: 0 DELIVERED or
RESPONDED, 1 FAILED or EXPIRED, 2 usage or setup error, 3 the gateway
refused or could not answer a call, 4 no final state within --wait-s.
"""
import argparse
import os
import sys
import uuid

# Run from a checkout without PYTHONPATH: the module is one folder up; it
# finds its generated stubs in build/ (or $MHS_PYTHON_GEN) by itself.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

PAYLOAD = ('<PORX_IN020101SM31 xmlns="urn:hl7-org:v3"><id root="%s"/>'
           '</PORX_IN020101SM31>')


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sender-ods", default="FA565")
    ap.add_argument("--interaction-id", default="PORX_IN020101SM31")
    ap.add_argument("--idempotency-key", default=None,
                    help="default: a new random key")
    ap.add_argument("--wait-s", type=float, default=60.0,
                    help="how long to wait for a final state (default 60)")
    args = ap.parse_args()

    try:
        import mhs_client as m
    except ImportError as e:
        print(f"submit_and_wait: {e}", file=sys.stderr)
        return 2
    if not os.environ.get("MHS_GATEWAY_URL") or not os.environ.get("MHS_TOKEN"):
        print("submit_and_wait: set MHS_GATEWAY_URL and MHS_TOKEN "
              "(. run/stack.env)", file=sys.stderr)
        return 2

    key = args.idempotency_key or "example-" + str(uuid.uuid4())
    try:
        client = m.Client()
    except (ValueError, OSError) as e:  # bad URL; libnng.so.1 missing
        print(f"submit_and_wait: {e}", file=sys.stderr)
        return 2
    with client:
        try:
            r = client.submit(
                idempotency_key=key, interaction_id=args.interaction_id,
                prescription_id=m.make_prescription_id(),
                nhs_number=m.make_nhs_number(), sender_ods=args.sender_ods,
                payload=PAYLOAD % uuid.uuid4(), content_type="text/xml")
        except m.MhsError as e:
            print(f"submit_and_wait: submit failed: {e}", file=sys.stderr)
            return 3
        print(f"message_id {r.message_id} {m.state_name(r.state)}"
              f"{' (duplicate)' if r.duplicate else ''}", flush=True)
        try:
            st = client.wait_final(r.message_id, timeout_ms=int(args.wait_s * 1000))
        except m.DeadlineExceeded as e:
            print(f"submit_and_wait: {e}", file=sys.stderr)
            return 4
        except m.MhsError as e:
            print(f"submit_and_wait: status failed: {e}", file=sys.stderr)
            return 3
    print(f"message_id {st.message_id} {m.state_name(st.state)} "
          f"attempts={st.attempts}" + (f" last_error={st.last_error!r}" if st.last_error else ""))
    return 0 if st.state in (m.MessageState.MESSAGE_STATE_DELIVERED,
                             m.MessageState.MESSAGE_STATE_RESPONDED) else 1


if __name__ == "__main__":
    sys.exit(main())
