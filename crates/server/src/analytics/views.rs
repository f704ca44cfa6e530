//! The analytics answers. Ids are decimal strings, as everywhere in the API: a 64-bit id as a
//! JSON number loses its low digits in JavaScript.

use flashback_store::{MinuteRollup, SkuTotal};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One product's sales over a range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct TopSku {
    /// The product, a decimal id.
    #[schema(pattern = "^[0-9]+$", example = "255524339174014977")]
    pub product_id: String,
    /// Its SKU.
    pub sku: String,
    /// Units sold.
    pub units: i64,
    /// Value sold, minor units.
    pub gmv_minor: i64,
}

impl From<SkuTotal> for TopSku {
    fn from(t: SkuTotal) -> Self {
        Self { product_id: t.product_id.to_string(), sku: t.sku, units: t.units, gmv_minor: t.gmv_minor }
    }
}

/// The store's top list as answered.
pub fn top_skus(rows: Vec<SkuTotal>) -> Vec<TopSku> {
    rows.into_iter().map(TopSku::from).collect()
}

/// One day's totals and best sellers.
#[derive(Debug, Serialize, ToSchema)]
pub struct Summary {
    /// The day's start and end (exclusive), Unix ms.
    pub from_ms: i64,
    /// See `from_ms`.
    pub to_ms: i64,
    /// Totals (paid orders, GMV, units, cancellations, refunds).
    #[schema(value_type = Object)]
    pub totals: MinuteRollup,
    /// The ten best-selling products by value.
    pub top_skus: Vec<TopSku>,
}

/// Seconds or minutes.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Granularity {
    /// From memory: the last `analytics.seconds_kept` seconds of this instance.
    Second,
    /// From the rollups.
    Minute,
}

/// One point of a series.
#[derive(Debug, Serialize, ToSchema)]
pub struct SeriesPoint {
    /// Start of the second or minute, Unix ms.
    pub at_ms: i64,
    /// Orders paid in it.
    pub paid_orders: i64,
    /// GMV paid in it, minor units.
    pub gmv_minor: i64,
}

/// GMV and paid orders per second or minute.
#[derive(Debug, Serialize, ToSchema)]
pub struct Series {
    /// `second` or `minute`.
    pub granularity: Granularity,
    /// Every second or minute of the range, quiet ones as zeros, oldest first.
    pub points: Vec<SeriesPoint>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_product_id_is_answered_as_a_string_that_keeps_every_digit() {
        let row = SkuTotal { product_id: 255_524_339_174_014_977, sku: "A-1".into(), units: 2, gmv_minor: 10 };
        let json = serde_json::to_value(TopSku::from(row)).unwrap();
        assert_eq!(json["product_id"], "255524339174014977");
    }
}
