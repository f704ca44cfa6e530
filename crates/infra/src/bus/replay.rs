//! Dead letters back to work: each message in `<prefix>.dead-letters` goes back to the queue it
//! died in, with its attempts counted from one again.

use lapin::message::BasicGetMessage;
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicPublishOptions, BasicRejectOptions, ConfirmSelectOptions};
use lapin::types::{AMQPValue, ShortString};
use lapin::{Channel, Confirmation};

use super::connection::RabbitBus;
use super::error::{BusError, BusResult, timed};
use super::message;

/// What a replay did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Replayed {
    /// Messages put back on the queue they died in.
    pub replayed: u64,
    /// Messages left in the dead-letter queue because they name no queue to go back to (they
    /// were not events, or were dead-lettered by hand).
    pub kept: u64,
}

impl RabbitBus {
    /// Moves at most `limit` messages (and never more than the dead-letter queue held when the
    /// call began, so an event that fails again at once is not replayed twice) from
    /// `<prefix>.dead-letters` back to the queue each died in (the `x-death` header's first
    /// `queue`), attempt header reset to 1. Each is published with a publisher confirm before
    /// its dead letter is acked: a crash in between leaves a copy in both places, which the
    /// consumers' dedupe makes harmless.
    pub async fn replay_dead_letters(&self, limit: u64) -> BusResult<Replayed> {
        let t = self.settings().call_timeout;
        let dead = self.dead_letter_queue();
        let waiting = u64::from(self.message_count(&dead).await?);
        let channel = self.open_channel().await?;
        timed("confirm select", t, channel.confirm_select(ConfirmSelectOptions::default())).await?;
        let mut done = Replayed::default();
        let mut kept = Vec::new();
        while done.replayed + done.kept < waiting.min(limit) {
            let get = channel.basic_get(dead.as_str().into(), BasicGetOptions { no_ack: false });
            let Some(message) = timed("get", t, get).await? else { break };
            match origin_queue(&message) {
                Some(queue) => {
                    self.put_back(&channel, &message, &queue).await?;
                    timed("ack", t, message.delivery.acker.ack(BasicAckOptions::default())).await?;
                    done.replayed += 1;
                }
                None => {
                    // Held (not requeued yet) so the loop does not get it again; released below.
                    kept.push(message);
                    done.kept += 1;
                }
            }
        }
        for message in kept {
            let requeue = BasicRejectOptions { requeue: true };
            timed("requeue", t, message.delivery.acker.reject(requeue)).await?;
        }
        timed("close channel", t, channel.close(200, "OK".into())).await?;
        tracing::info!(replayed = done.replayed, kept = done.kept, "dead letters replayed");
        Ok(done)
    }

    async fn put_back(&self, channel: &Channel, message: &BasicGetMessage, queue: &str) -> BusResult<()> {
        let props = message::with_attempt(&message.delivery.properties, 1);
        let publish = channel.basic_publish(
            "".into(),
            queue.into(),
            BasicPublishOptions::default(),
            &message.delivery.data,
            props,
        );
        let confirm = timed("publish", self.settings().call_timeout, publish).await?;
        match timed("confirm", self.settings().confirm_timeout, confirm).await? {
            Confirmation::Ack(_) => Ok(()),
            Confirmation::Nack(_) | Confirmation::NotRequested => {
                let event_id = message.delivery.properties.message_id().as_ref().and_then(|m| m.as_str().parse().ok());
                Err(BusError::Nacked { event_id: event_id.unwrap_or(0) })
            }
        }
    }
}

/// The queue a dead letter died in: the broker's `x-death` header, newest death first.
fn origin_queue(message: &BasicGetMessage) -> Option<String> {
    let headers = message.delivery.properties.headers().as_ref()?;
    let AMQPValue::FieldArray(deaths) = headers.inner().get("x-death")? else { return None };
    let AMQPValue::FieldTable(first) = deaths.as_slice().first()? else { return None };
    match first.inner().get("queue")? {
        AMQPValue::LongString(q) => Some(q.to_string()),
        AMQPValue::ShortString(q) => Some(ShortString::as_str(q).to_owned()),
        _ => None,
    }
}
