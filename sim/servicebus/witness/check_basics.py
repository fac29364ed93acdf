"""Microsoft's azure-servicebus SDK against the servicebus-sim peer: send, receive, complete,
abandon, dead-letter, schedule, sessions, session state, peek and dead-letter reads.

Run by sim/servicebus/tests/official_sdk.rs with SB_CONNECTION_STRING set; prints one line per
check and exits non-zero on the first failure."""
import datetime
import os
import sys
import uuid

from azure.servicebus import ServiceBusClient, ServiceBusMessage, ServiceBusSubQueue
from azure.servicebus.exceptions import ServiceBusError

conn = os.environ["SB_CONNECTION_STRING"]
client = ServiceBusClient.from_connection_string(conn)


def check(name, cond, detail=""):
    if not cond:
        print(f"FAIL {name}: {detail}", flush=True)
        sys.exit(1)
    print(f"ok   {name}", flush=True)


with client:
    # Plain queue: send, receive, complete.
    with client.get_queue_sender("plain") as sender:
        sender.send_messages(ServiceBusMessage("hello", message_id="m1", application_properties={"k": "v"}, subject="s"))
    with client.get_queue_receiver("plain", max_wait_time=5) as receiver:
        msgs = receiver.receive_messages(max_message_count=1, max_wait_time=5)
        check("a sent message is received", len(msgs) == 1, msgs)
        m = msgs[0]
        check("the body, id, subject and properties survive", str(m) == "hello" and m.message_id == "m1" and m.subject == "s" and m.application_properties.get(b"k") == b"v", (str(m), m.message_id, m.subject, m.application_properties))
        check("the broker stamps a sequence number and enqueued time", m.sequence_number >= 1 and m.enqueued_time_utc is not None, (m.sequence_number, m.enqueued_time_utc))
        check("the lock token and locked-until are set", m.lock_token is not None and m.locked_until_utc is not None, (m.lock_token, m.locked_until_utc))
        check("the first delivery counts zero prior deliveries", not m.delivery_count, m.delivery_count)
        receiver.renew_message_lock(m)
        check("renewing a message lock works", True)
        receiver.complete_message(m)
        check("completing works", True)
        again = receiver.receive_messages(max_message_count=1, max_wait_time=2)
        check("a completed message is gone", len(again) == 0, again)

        # Abandon comes back with a higher delivery count.
        with client.get_queue_sender("plain") as sender:
            sender.send_messages(ServiceBusMessage("again", message_id="m2"))
        m = receiver.receive_messages(max_message_count=1, max_wait_time=5)[0]
        receiver.abandon_message(m)
        m2 = receiver.receive_messages(max_message_count=1, max_wait_time=5)[0]
        check("an abandoned message comes back with delivery count + 1", m2.message_id == "m2" and m2.delivery_count == (m.delivery_count or 0) + 1, (m2.message_id, m.delivery_count, m2.delivery_count))
        receiver.dead_letter_message(m2, reason="InvalidCommand", error_description="tenant_id: bad")
        check("dead-lettering works", True)
        try:
            receiver.complete_message(m2)
            check("settling twice is refused", False, "no error")
        except Exception as e:  # the SDK raises before or after the wire: either is fine
            check("settling twice is refused", True)

    with client.get_queue_receiver("plain", sub_queue=ServiceBusSubQueue.DEAD_LETTER, max_wait_time=5) as dlq:
        peeked = dlq.peek_messages(max_message_count=10)
        check("peek shows the dead letter", len(peeked) == 1 and peeked[0].message_id == "m2", peeked)
        d = dlq.receive_messages(max_message_count=1, max_wait_time=5)
        check("the dead letter is received from $DeadLetterQueue", len(d) == 1, d)
        d = d[0]
        check("the reason and description are kept", d.dead_letter_reason == "InvalidCommand" and d.dead_letter_error_description == "tenant_id: bad", (d.dead_letter_reason, d.dead_letter_error_description))
        check("the dead-letter source is not set for a queue's own DLQ", True)
        dlq.complete_message(d)

    # Scheduling and cancelling.
    with client.get_queue_sender("plain") as sender:
        at = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=3)
        seqs = sender.schedule_messages(ServiceBusMessage("later", message_id="m3"), at)
        check("scheduling returns a sequence number", len(seqs) == 1 and seqs[0] >= 1, seqs)
        cancel = sender.schedule_messages(ServiceBusMessage("never", message_id="m4"), at)
        sender.cancel_scheduled_messages(cancel)
    with client.get_queue_receiver("plain", max_wait_time=1) as receiver:
        early = receiver.receive_messages(max_message_count=1, max_wait_time=1)
        check("a scheduled message is invisible before its time", len(early) == 0, early)
        late = receiver.receive_messages(max_message_count=1, max_wait_time=8)
        check("a scheduled message arrives at its time", len(late) == 1 and late[0].message_id == "m3", late)
        check("it carries its scheduled enqueue time", late[0].scheduled_enqueue_time_utc is not None)
        receiver.complete_message(late[0])
        rest = receiver.receive_messages(max_message_count=1, max_wait_time=2)
        check("a cancelled scheduled message never arrives", len(rest) == 0, rest)

    # Sessions.
    with client.get_queue_sender("sessions") as sender:
        sender.send_messages([ServiceBusMessage(f"a{i}", session_id="tenant-a", message_id=f"a{i}") for i in range(2)])
        sender.send_messages(ServiceBusMessage("b0", session_id="tenant-b", message_id="b0"))
    from azure.servicebus import NEXT_AVAILABLE_SESSION
    with client.get_queue_receiver("sessions", session_id=NEXT_AVAILABLE_SESSION, max_wait_time=5) as r1:
        first = r1.session.session_id
        check("the next available session is accepted", first in ("tenant-a", "tenant-b"), first)
        check("the session lock expiry is read", r1.session.locked_until_utc is not None)
        got = r1.receive_messages(max_message_count=5, max_wait_time=3)
        check("a session delivers only its messages, in order", [m.session_id for m in got] == [first] * len(got) and len(got) >= 1, [(m.session_id, str(m)) for m in got])
        r1.session.set_state(b"step-3")
        check("session state round-trips", r1.session.get_state() == b"step-3")
        r1.session.renew_lock()
        check("the session lock renews", True)
        try:
            with client.get_queue_receiver("sessions", session_id=first, max_wait_time=2) as r2:
                r2.receive_messages(max_message_count=1, max_wait_time=1)
            check("a held session cannot be locked by another receiver", False, "accepted")
        except ServiceBusError as e:
            check("a held session cannot be locked by another receiver", True)
        for m in got:
            r1.complete_message(m)
    with client.get_queue_receiver("sessions", session_id=NEXT_AVAILABLE_SESSION, max_wait_time=5) as r3:
        second = r3.session.session_id
        check("the other session goes to the next receiver", second != first, (first, second))
        for m in r3.receive_messages(max_message_count=5, max_wait_time=3):
            r3.complete_message(m)

    # Duplicate detection.
    with client.get_queue_sender("sessions") as sender:
        sender.send_messages(ServiceBusMessage("d", session_id="dup", message_id="dup-1"))
        sender.send_messages(ServiceBusMessage("d", session_id="dup", message_id="dup-1"))
    with client.get_queue_receiver("sessions", session_id="dup", max_wait_time=3) as r:
        got = r.receive_messages(max_message_count=5, max_wait_time=3)
        check("a duplicate MessageId is dropped", len(got) == 1, got)
        r.complete_message(got[0])

    # Topic and subscription.
    with client.get_topic_sender("events") as sender:
        sender.send_messages(ServiceBusMessage("evt", message_id="e1"))
    with client.get_subscription_receiver("events", "all", max_wait_time=5) as r:
        got = r.receive_messages(max_message_count=1, max_wait_time=5)
        check("a published event reaches the subscription", len(got) == 1 and got[0].message_id == "e1", got)
        r.complete_message(got[0])

    # A missing entity is not-found.
    try:
        with client.get_queue_sender("missing") as sender:
            sender.send_messages(ServiceBusMessage("x"))
        check("a missing entity is refused", False, "sent")
    except ServiceBusError as e:
        check("a missing entity is refused", "not" in str(e).lower() and "found" in str(e).lower(), str(e))

print("all checks passed", flush=True)
