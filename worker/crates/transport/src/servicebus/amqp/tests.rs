//! Unit tests of the message <-> AMQP mapping in `amqp.rs`: pure, no broker.

use super::*;
use fe2o3_amqp_types::messaging::{AmqpValue, Batch, Header};

fn outgoing() -> OutgoingMessage {
    let mut props = BTreeMap::new();
    props.insert("kind".to_string(), "OnboardTenant".to_string());
    OutgoingMessage {
        message_id: "req-1:0".into(),
        session_id: Some("tenant-a".into()),
        content_type: Some("application/json".into()),
        subject: Some("OnboardTenant".into()),
        correlation_id: Some("req-1".into()),
        body: br#"{"tenant":"a"}"#.to_vec(),
        application_properties: props,
        scheduled_enqueue_time: None,
    }
}

/// What a receiver gets for a sent message: the same sections, data body as a batch, plus
/// the annotations and header the broker adds.
fn as_received(sent: Message<Data>) -> Message<Body<Value>> {
    Message {
        header: sent.header,
        delivery_annotations: None,
        message_annotations: sent.message_annotations,
        properties: sent.properties,
        application_properties: sent.application_properties,
        body: Body::Data(Batch::new(vec![sent.body])),
        footer: None,
    }
}

fn annotate(message: &mut Message<Body<Value>>, key: &str, value: Value) {
    message
        .message_annotations
        .get_or_insert_with(MessageAnnotations::default)
        .insert(OwnedKey::from(key), value);
}

fn header(delivery_count: u32) -> Header {
    let mut h = Header::builder().build();
    h.delivery_count = delivery_count;
    h
}

#[test]
fn an_outgoing_message_round_trips_through_amqp() {
    let sent = outgoing();
    let received = received_from_amqp(&as_received(outgoing_to_amqp(&sent).unwrap()));
    assert_eq!(received.message_id, "req-1:0");
    assert_eq!(received.session_id.as_deref(), Some("tenant-a"));
    assert_eq!(received.content_type.as_deref(), Some("application/json"));
    assert_eq!(received.subject.as_deref(), Some("OnboardTenant"));
    assert_eq!(received.correlation_id.as_deref(), Some("req-1"));
    assert_eq!(received.body, sent.body);
    assert_eq!(received.application_properties, sent.application_properties);
    assert_eq!(received.delivery_count, 1);
    assert_eq!(received.dead_letter_reason, None);
}

#[test]
fn the_session_id_travels_as_the_amqp_group_id() {
    let amqp = outgoing_to_amqp(&outgoing()).unwrap();
    let props = amqp.properties.unwrap();
    assert_eq!(props.group_id.as_deref(), Some("tenant-a"));
    assert_eq!(props.message_id, Some(MessageId::String("req-1:0".into())));
    assert_eq!(
        props.correlation_id,
        Some(MessageId::String("req-1".into()))
    );
    assert_eq!(props.subject.as_deref(), Some("OnboardTenant"));
    assert_eq!(
        props
            .content_type
            .map(|s| s.as_str().to_string())
            .as_deref(),
        Some("application/json")
    );
}

#[test]
fn a_message_without_a_session_has_no_group_id() {
    let mut m = outgoing();
    m.session_id = None;
    let amqp = outgoing_to_amqp(&m).unwrap();
    assert_eq!(amqp.properties.unwrap().group_id, None);
    let received = received_from_amqp(&as_received(outgoing_to_amqp(&m).unwrap()));
    assert_eq!(received.session_id, None);
}

#[test]
fn traceparent_is_also_written_as_diagnostic_id() {
    let mut m = outgoing();
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    m.application_properties
        .insert(TRACEPARENT.into(), tp.into());
    let amqp = outgoing_to_amqp(&m).unwrap();
    let props = amqp.application_properties.unwrap();
    assert_eq!(
        props.0.get(TRACEPARENT),
        Some(&SimpleValue::String(tp.into()))
    );
    assert_eq!(
        props.0.get(DIAGNOSTIC_ID),
        Some(&SimpleValue::String(tp.into()))
    );
}

#[test]
fn an_explicit_diagnostic_id_is_kept() {
    let mut m = outgoing();
    m.application_properties
        .insert(TRACEPARENT.into(), "00-aa-bb-01".into());
    m.application_properties
        .insert(DIAGNOSTIC_ID.into(), "00-cc-dd-01".into());
    let props = outgoing_to_amqp(&m)
        .unwrap()
        .application_properties
        .unwrap();
    assert_eq!(
        props.0.get(DIAGNOSTIC_ID),
        Some(&SimpleValue::String("00-cc-dd-01".into()))
    );
}

#[test]
fn a_message_without_properties_sends_no_property_section() {
    let mut m = outgoing();
    m.application_properties.clear();
    assert!(
        outgoing_to_amqp(&m)
            .unwrap()
            .application_properties
            .is_none()
    );
}

#[test]
fn the_scheduled_enqueue_time_becomes_the_service_bus_annotation() {
    let mut m = outgoing();
    let at = DateTime::parse_from_rfc3339("2031-02-03T04:05:06.789Z")
        .unwrap()
        .with_timezone(&Utc);
    m.scheduled_enqueue_time = Some(at);
    let amqp = outgoing_to_amqp(&m).unwrap();
    assert_eq!(scheduled_enqueue_time_of(&amqp), Some(at));
    let annotations = amqp.message_annotations.unwrap();
    let (key, value) = annotations.iter().next().unwrap();
    assert!(key_is(key, "x-opt-scheduled-enqueue-time"));
    assert_eq!(
        value,
        &Value::Timestamp(Timestamp::from_milliseconds(at.timestamp_millis()))
    );
}

#[test]
fn an_unscheduled_message_has_no_annotations() {
    let amqp = outgoing_to_amqp(&outgoing()).unwrap();
    assert!(amqp.message_annotations.is_none());
    assert_eq!(scheduled_enqueue_time_of(&amqp), None);
}

#[test]
fn broker_annotations_fill_sequence_number_enqueued_time_and_lock_expiry() {
    let mut m = as_received(outgoing_to_amqp(&outgoing()).unwrap());
    let enqueued = DateTime::parse_from_rfc3339("2030-01-01T00:00:00.250Z")
        .unwrap()
        .with_timezone(&Utc);
    let locked = enqueued + chrono::Duration::seconds(60);
    annotate(&mut m, "x-opt-sequence-number", Value::Long(42));
    annotate(
        &mut m,
        "x-opt-enqueued-time",
        Value::Timestamp(Timestamp::from_milliseconds(enqueued.timestamp_millis())),
    );
    annotate(
        &mut m,
        "x-opt-locked-until",
        Value::Timestamp(Timestamp::from_milliseconds(locked.timestamp_millis())),
    );
    m.header = Some(header(2));
    let r = received_from_amqp(&m);
    assert_eq!(r.sequence_number, 42);
    assert_eq!(r.enqueued_time, enqueued);
    assert_eq!(r.delivery_count, 3, "AMQP counts earlier failed deliveries");
    assert_eq!(locked_until_from_amqp(&m), Some(locked));
}

#[test]
fn the_dead_letter_reason_and_description_leave_the_properties_for_their_fields() {
    let mut m = as_received(outgoing_to_amqp(&outgoing()).unwrap());
    let props = m.application_properties.as_mut().unwrap();
    props.0.insert(
        DEAD_LETTER_REASON.into(),
        SimpleValue::String("InvalidCommand".into()),
    );
    props.0.insert(
        DEAD_LETTER_DESCRIPTION.into(),
        SimpleValue::String("tenant_id: must not be empty".into()),
    );
    let r = received_from_amqp(&m);
    assert_eq!(r.dead_letter_reason.as_deref(), Some("InvalidCommand"));
    assert_eq!(
        r.dead_letter_description.as_deref(),
        Some("tenant_id: must not be empty")
    );
    assert!(!r.application_properties.contains_key(DEAD_LETTER_REASON));
    assert!(
        !r.application_properties
            .contains_key(DEAD_LETTER_DESCRIPTION)
    );
    assert_eq!(
        r.application_properties.get("kind").map(String::as_str),
        Some("OnboardTenant")
    );
}

#[test]
fn non_string_application_properties_are_stringified() {
    let mut m = as_received(outgoing_to_amqp(&outgoing()).unwrap());
    let at = DateTime::parse_from_rfc3339("2030-05-06T07:08:09.010Z")
        .unwrap()
        .with_timezone(&Utc);
    let id = uuid::Uuid::parse_str("6f1c2f1e-8a8f-4c55-9a53-0d3c9e3b1a10").unwrap();
    let props = m.application_properties.as_mut().unwrap();
    props.0.insert("attempt".into(), SimpleValue::Int(3));
    props.0.insert("big".into(), SimpleValue::Ulong(u64::MAX));
    props.0.insert("neg".into(), SimpleValue::Long(-7));
    props.0.insert("flag".into(), SimpleValue::Bool(true));
    props
        .0
        .insert("ratio".into(), SimpleValue::Double(0.5.into()));
    props.0.insert(
        "at".into(),
        SimpleValue::Timestamp(Timestamp::from_milliseconds(at.timestamp_millis())),
    );
    props
        .0
        .insert("id".into(), SimpleValue::Uuid(id.into_bytes().into()));
    props.0.insert(
        "raw".into(),
        SimpleValue::Binary(vec![0xde, 0xad, 0x01].into()),
    );
    props
        .0
        .insert("sym".into(), SimpleValue::Symbol(Symbol::from("x")));
    props.0.insert("none".into(), SimpleValue::Null);
    let r = received_from_amqp(&m).application_properties;
    assert_eq!(r["attempt"], "3");
    assert_eq!(r["big"], u64::MAX.to_string());
    assert_eq!(r["neg"], "-7");
    assert_eq!(r["flag"], "true");
    assert_eq!(r["ratio"], "0.5");
    assert_eq!(r["at"], "2030-05-06T07:08:09.010Z");
    assert_eq!(r["id"], "6f1c2f1e-8a8f-4c55-9a53-0d3c9e3b1a10");
    assert_eq!(r["raw"], "dead01");
    assert_eq!(r["sym"], "x");
    assert_eq!(r["none"], "");
}

#[test]
fn non_string_message_and_correlation_ids_are_read_as_text() {
    let mut m = as_received(outgoing_to_amqp(&outgoing()).unwrap());
    let id = uuid::Uuid::parse_str("00000000-0000-0000-0000-00000000002a").unwrap();
    let props = m.properties.as_mut().unwrap();
    props.message_id = Some(MessageId::Uuid(id.into_bytes().into()));
    props.correlation_id = Some(MessageId::Ulong(42));
    let r = received_from_amqp(&m);
    assert_eq!(r.message_id, id.to_string());
    assert_eq!(r.correlation_id.as_deref(), Some("42"));
}

#[test]
fn bodies_in_several_data_sections_or_as_text_values_are_read() {
    let mut m = as_received(outgoing_to_amqp(&outgoing()).unwrap());
    m.body = Body::Data(Batch::new(vec![
        Data(Binary::from(b"ab".to_vec())),
        Data(Binary::from(b"cd".to_vec())),
    ]));
    assert_eq!(received_from_amqp(&m).body, b"abcd");
    m.body = Body::Value(AmqpValue(Value::String("{\"x\":1}".into())));
    assert_eq!(received_from_amqp(&m).body, b"{\"x\":1}");
    m.body = Body::Value(AmqpValue(Value::Int(5)));
    assert!(received_from_amqp(&m).body.is_empty());
    m.body = Body::Empty;
    assert!(received_from_amqp(&m).body.is_empty());
}

#[test]
fn a_bare_message_reads_with_neutral_values() {
    let m: Message<Body<Value>> = Message {
        header: None,
        delivery_annotations: None,
        message_annotations: None,
        properties: None,
        application_properties: None,
        body: Body::Empty,
        footer: None,
    };
    let r = received_from_amqp(&m);
    assert_eq!(r.message_id, "");
    assert_eq!(r.session_id, None);
    assert_eq!(r.sequence_number, 0);
    assert_eq!(r.delivery_count, 1);
    assert_eq!(r.enqueued_time, DateTime::<Utc>::UNIX_EPOCH);
    assert!(r.application_properties.is_empty());
    assert_eq!(locked_until_from_amqp(&m), None);
}

#[test]
fn ids_that_service_bus_would_refuse_are_rejected_before_sending() {
    let mut m = outgoing();
    m.message_id = String::new();
    assert!(matches!(
        outgoing_to_amqp(&m),
        Err(TransportError::Rejected(_))
    ));
    m.message_id = "x".repeat(129);
    let err = outgoing_to_amqp(&m).unwrap_err();
    assert!(err.to_string().contains("at most 128"), "{err}");
    let mut m = outgoing();
    m.session_id = Some(String::new());
    assert!(matches!(
        outgoing_to_amqp(&m),
        Err(TransportError::Rejected(_))
    ));
    m.session_id = Some("t".repeat(128));
    assert!(outgoing_to_amqp(&m).is_ok());
}
