//! The `memory` engine's journal records: one accepted reservation each, with its
//! idempotency key when the purchase sent one, so the key is durable exactly when the
//! reservation is (one record, one fsync).
//!
//! - Without a key (the storm's usual case, and every record written before keys existed):
//!   id, sale, buyer, quantity, time — five i64, little-endian, 40 bytes.
//! - With a key: the marker −1 (an i64; no reservation id is negative), the same 40 bytes, the
//!   key's length (one byte; keys are at most 128 bytes) and the key.

use flashback_core::{SaleId, UserId};
use flashback_store::{FlashReservation, ReservationStatus};

/// Bytes of a record without a key.
pub const RECORD: usize = 40;
/// The first eight bytes of a keyed record.
const KEYED: i64 = -1;

fn fields(r: &FlashReservation) -> [i64; 5] {
    [r.id, r.sale_id.get(), r.user_id.get(), r.quantity, r.created_at_ms]
}

/// A record without a key (the key, if any, is not written: see [`encode_keyed`]).
pub fn encode(r: &FlashReservation) -> [u8; RECORD] {
    let mut out = [0u8; RECORD];
    for (slot, v) in out.chunks_exact_mut(8).zip(fields(r)) {
        slot.copy_from_slice(&v.to_le_bytes());
    }
    out
}

/// A record carrying `key`; `None` if the key is longer than a record can hold.
pub fn encode_keyed(r: &FlashReservation, key: &str) -> Option<Vec<u8>> {
    let len = u8::try_from(key.len()).ok()?;
    let mut out = Vec::with_capacity(8 + RECORD + 1 + key.len());
    out.extend_from_slice(&KEYED.to_le_bytes());
    out.extend_from_slice(&encode(r));
    out.push(len);
    out.extend_from_slice(key.as_bytes());
    Some(out)
}

fn take<'a>(rest: &mut &'a [u8], n: usize) -> anyhow::Result<&'a [u8]> {
    anyhow::ensure!(rest.len() >= n, "a flash journal record cut short ({} of {n} bytes)", rest.len());
    let (head, tail) = rest.split_at(n);
    *rest = tail;
    Ok(head)
}

fn int(bytes: &[u8]) -> i64 {
    i64::from_le_bytes(bytes.try_into().unwrap_or([0; 8]))
}

/// The reservations in one frame's payload (records of either kind, in order).
pub fn decode(payload: &[u8]) -> anyhow::Result<Vec<FlashReservation>> {
    let mut rest = payload;
    let mut out = Vec::with_capacity(payload.len() / RECORD);
    while !rest.is_empty() {
        let keyed = rest.len() >= 8 && int(&rest[..8]) == KEYED;
        if keyed {
            take(&mut rest, 8)?;
        }
        let record = take(&mut rest, RECORD)?;
        let mut v = record.chunks_exact(8).map(int);
        let mut next = || v.next().unwrap_or(0);
        let (id, sale, user, quantity, at) = (next(), next(), next(), next(), next());
        anyhow::ensure!(quantity > 0, "reservation {id} with quantity {quantity}");
        let idempotency_key = if keyed {
            let len = usize::from(*take(&mut rest, 1)?.first().unwrap_or(&0));
            let key = std::str::from_utf8(take(&mut rest, len)?)?;
            anyhow::ensure!(!key.is_empty(), "reservation {id} with an empty idempotency key");
            Some(key.to_owned())
        } else {
            None
        };
        out.push(FlashReservation {
            id,
            sale_id: SaleId::new(sale)?,
            user_id: UserId::new(user)?,
            quantity,
            status: ReservationStatus::Reserved,
            order_id: None,
            created_at_ms: at,
            idempotency_key,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reservation(id: i64, key: Option<&str>) -> FlashReservation {
        FlashReservation {
            id,
            sale_id: SaleId::new(7).expect("id"),
            user_id: UserId::new(9).expect("id"),
            quantity: 2,
            status: ReservationStatus::Reserved,
            order_id: None,
            created_at_ms: 1_700_000_000_000,
            idempotency_key: key.map(str::to_owned),
        }
    }

    #[test]
    fn records_with_and_without_a_key_read_back_in_order() {
        let plain = reservation(1, None);
        let keyed = reservation(2, Some("retry-me:{x}"));
        let longest = reservation(3, Some(&"k".repeat(128)));
        let mut payload = encode(&plain).to_vec();
        payload.extend(encode_keyed(&keyed, "retry-me:{x}").expect("fits"));
        payload.extend(encode_keyed(&longest, &"k".repeat(128)).expect("fits"));
        payload.extend(encode(&plain));
        assert_eq!(decode(&payload).expect("decode"), vec![plain.clone(), keyed, longest, plain]);
        assert!(encode_keyed(&reservation(4, None), &"k".repeat(256)).is_none());
    }

    #[test]
    fn a_record_cut_short_or_without_units_is_an_error_not_a_reservation() {
        let keyed = encode_keyed(&reservation(2, Some("abc")), "abc").expect("fits");
        for cut in [keyed.len() - 1, 8 + RECORD, 20] {
            assert!(decode(&keyed[..cut]).is_err(), "cut at {cut}");
        }
        let none = encode(&FlashReservation { quantity: 0, ..reservation(5, None) });
        assert!(format!("{:#}", decode(&none).expect_err("no units")).contains("quantity 0"));
    }
}
