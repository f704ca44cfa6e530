//! How an outbox event travels: AMQP properties and headers going out, [`Delivery`] coming in.

use flashback_store::OutboxEvent;
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, ShortString};

use super::error::{BusError, BusResult};

/// Header counting how many times a message has been handed to a handler (1 on first publish).
pub const ATTEMPT_HEADER: &str = "x-attempt";
/// Header carrying the event's aggregate (order) id, so a consumer can find its shard.
pub const AGGREGATE_HEADER: &str = "x-aggregate-id";

/// Persistent: the broker writes the message to disk in a durable queue.
pub(crate) const PERSISTENT: u8 = 2;

/// One event as a consumer's handler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// The outbox event id: the idempotency key.
    pub event_id: i64,
    /// `order.created`, `order.paid`, …
    pub event_type: String,
    /// The order the event is about.
    pub aggregate_id: i64,
    /// The JSON body (docs/EVENTS.md).
    pub payload: String,
    /// 1 the first time; one more for each retry after the handler failed. A redelivery after a
    /// consumer crashed keeps the attempt it had.
    pub attempt: u32,
    /// The broker delivered this message before without an ack (a consumer crashed or lost
    /// its channel): the handler may already have applied it.
    pub redelivered: bool,
}

fn short(what: &str, s: &str) -> BusResult<ShortString> {
    ShortString::try_new(s).map_err(|e| BusError::Invalid(format!("{what} {s:?}: {e}")))
}

/// The properties of an event's first publication: persistent, JSON, `message_id` = event id,
/// `type` = event type, attempt 1.
pub(crate) fn properties(event: &OutboxEvent) -> BusResult<BasicProperties> {
    let mut headers = FieldTable::default();
    headers.insert(ATTEMPT_HEADER.into(), AMQPValue::LongLongInt(1));
    headers.insert(AGGREGATE_HEADER.into(), AMQPValue::LongLongInt(event.aggregate_id));
    Ok(BasicProperties::default()
        .with_delivery_mode(PERSISTENT)
        .with_content_type("application/json".into())
        .with_message_id(event.id.to_string().into())
        .with_type(short("event type", &event.event_type)?)
        .with_timestamp(u64::try_from(event.created_at_ms / 1000).unwrap_or(0))
        .with_app_id("flashback".into())
        .with_headers(headers))
}

/// The same properties with the attempt header set to `attempt`.
pub(crate) fn with_attempt(props: &BasicProperties, attempt: u32) -> BasicProperties {
    let mut headers = props.headers().clone().unwrap_or_default();
    headers.insert(ATTEMPT_HEADER.into(), AMQPValue::LongLongInt(attempt.into()));
    props.clone().with_headers(headers).with_delivery_mode(PERSISTENT)
}

pub(crate) fn int_header(headers: Option<&FieldTable>, key: &str) -> Option<i64> {
    match headers?.inner().get(key)? {
        AMQPValue::ShortShortInt(v) => Some((*v).into()),
        AMQPValue::ShortShortUInt(v) => Some((*v).into()),
        AMQPValue::ShortInt(v) => Some((*v).into()),
        AMQPValue::ShortUInt(v) => Some((*v).into()),
        AMQPValue::LongInt(v) => Some((*v).into()),
        AMQPValue::LongUInt(v) => Some((*v).into()),
        AMQPValue::LongLongInt(v) => Some(*v),
        _ => None,
    }
}

/// Reads a delivery; `Err` names what is missing or malformed (a poison message).
pub(crate) fn decode(d: &lapin::message::Delivery) -> Result<Delivery, String> {
    let props = &d.properties;
    let event_id = props
        .message_id()
        .as_ref()
        .and_then(|m| m.as_str().parse::<i64>().ok())
        .ok_or("message_id is not an event id")?;
    // Retries travel through the default exchange, where the routing key is the queue name,
    // so the type property is the authority.
    let event_type = props.kind().as_ref().map_or_else(|| d.routing_key.to_string(), ShortString::to_string);
    let aggregate_id = int_header(props.headers().as_ref(), AGGREGATE_HEADER).ok_or("no aggregate id header")?;
    let payload = String::from_utf8(d.data.clone()).map_err(|_| "payload is not UTF-8")?;
    let attempt = int_header(props.headers().as_ref(), ATTEMPT_HEADER).unwrap_or(1);
    let attempt = u32::try_from(attempt.max(1)).unwrap_or(u32::MAX);
    Ok(Delivery { event_id, event_type, aggregate_id, payload, attempt, redelivered: d.redelivered })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> OutboxEvent {
        OutboxEvent {
            id: 249_815_758_437_941_249,
            event_type: "order.paid".into(),
            aggregate_id: 249_815_758_437_941_248,
            payload: r#"{"id":"249815758437941249"}"#.into(),
            created_at_ms: 1_795_248_521_123,
        }
    }

    fn delivered(props: BasicProperties, payload: &str, routing_key: &str) -> lapin::message::Delivery {
        let mut d = lapin::message::Delivery::mock(1, "x".into(), routing_key.into(), false, payload.into());
        d.properties = props;
        d
    }

    #[test]
    fn an_event_survives_the_trip_through_amqp_properties() {
        let e = event();
        let props = properties(&e).expect("properties");
        assert_eq!(*props.delivery_mode(), Some(2));
        assert_eq!(props.content_type().as_ref().map(ShortString::as_str), Some("application/json"));
        let d = decode(&delivered(props, &e.payload, "order.paid")).expect("decode");
        assert_eq!(
            d,
            Delivery {
                event_id: e.id,
                event_type: e.event_type,
                aggregate_id: e.aggregate_id,
                payload: e.payload,
                attempt: 1,
                redelivered: false,
            }
        );
    }

    #[test]
    fn a_retry_carries_the_next_attempt_and_keeps_the_type_when_routed_by_queue_name() {
        let e = event();
        let props = with_attempt(&properties(&e).expect("properties"), 3);
        let d = decode(&delivered(props, &e.payload, "prefix.some-queue")).expect("decode");
        assert_eq!((d.attempt, d.event_type.as_str(), d.event_id), (3, "order.paid", e.id));
    }

    #[test]
    fn a_message_without_an_event_id_is_poison() {
        let d = delivered(BasicProperties::default(), "{}", "order.paid");
        assert!(decode(&d).is_err());
    }
}
