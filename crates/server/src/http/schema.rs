//! Schemas of the value types request bodies share, for the OpenAPI document: the rules the
//! server enforces (patterns, lengths, enumerations), so that a request valid by the document
//! is one the server accepts. Fields name them with `#[schema(value_type = …)]`.

use utoipa::openapi::RefOr;
use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};

/// A string schema: `pattern`, and at most `max` characters.
fn string(pattern: &str, max: Option<usize>) -> RefOr<Schema> {
    ObjectBuilder::new().schema_type(Type::String).pattern(Some(pattern)).max_length(max).into()
}

/// A string schema of fixed values.
fn one_of(values: &[&str]) -> RefOr<Schema> {
    ObjectBuilder::new().schema_type(Type::String).enum_values(Some(values.iter().copied())).into()
}

macro_rules! schema {
    ($(#[$doc:meta])* $name:ident => $body:expr) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name;

        impl utoipa::PartialSchema for $name {
            fn schema() -> RefOr<Schema> {
                $body
            }
        }

        impl utoipa::ToSchema for $name {}
    };
}

schema!(
    /// A decimal id.
    Id => string("^[1-9][0-9]{0,17}$", None)
);
schema!(
    /// A title or name: 1–200 characters after trimming, no control characters (tab and
    /// newline aside).
    Text200 => string(r"^\s*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x08\x0b-\x1f\x7f-\x9f]*$", Some(200))
);
schema!(
    /// A description: up to 10,000 characters, no control characters (tab and newline aside).
    Text10000 => string(r"^[^\x00-\x08\x0b-\x1f\x7f-\x9f]*$", Some(10_000))
);
schema!(
    /// A SKU: 1–64 of letters, digits, `-`, `_`, `.` (kept upper-cased).
    SkuCode => string("^[A-Za-z0-9_.-]{1,64}$", None)
);
schema!(
    /// An absolute http(s) URL of a product image, at most 2,048 characters of visible ASCII.
    ImageUrl => string("^https?://[!-.0-~][!-~]*$", Some(2048))
);
schema!(
    /// A region: a country (`CN`) or a subdivision (`CN-ZJ`), kept upper-cased.
    RegionCode => string("^[A-Za-z]{2}(-[A-Za-z0-9]{1,3})?$", None)
);
schema!(
    /// A product's shelf status.
    ShelfStatus => one_of(&["on_shelf", "off_shelf"])
);
schema!(
    /// A login name: 3–32 of letters, digits, `_`, `.`, `-` (case-insensitive).
    LoginName => string("^[A-Za-z0-9_.-]{3,32}$", None)
);
schema!(
    /// A network's item, order or tracking code: 1–64 letters, digits, `-` or `_`.
    Code64 => string("^[A-Za-z0-9_-]{1,64}$", None)
);
schema!(
    /// A short text: 1–64 characters after trimming, no control characters.
    Text64 => string(r"^\s*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$", Some(64))
);
schema!(
    /// An https URL (at most 900 characters).
    HttpsUrl => string(
        "^https://([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\\.)*[A-Za-z]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\
         (:([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5]))?(/[!-~]*)?$",
        Some(900)
    )
);
schema!(
    /// A review's decision.
    Decision => one_of(&["approve", "reject"])
);
schema!(
    /// The kinds of network tracking id.
    TrackingKindName => one_of(&["special_id", "relation_id", "sub_id"])
);
