//! Catalog values: SKUs, titles, descriptions, image URLs, shelf status, stock and regions.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ParseError;

macro_rules! bounded_text {
    ($(#[$meta:meta])* $name:ident, $field:literal, $min:literal..=$max:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Trims surrounding whitespace and checks the length in characters (at most the
            /// maximum as sent, at least the minimum once trimmed).
            pub fn parse(raw: &str) -> Result<Self, ParseError> {
                let text = raw.trim();
                let n = text.chars().count();
                if !($min..=$max).contains(&n) || raw.chars().count() > $max {
                    return Err(ParseError::new($field, concat!("must be ", $min, " to ", $max, " characters")));
                }
                if text.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
                    return Err(ParseError::new($field, "must not contain control characters"));
                }
                Ok(Self(text.to_owned()))
            }

            /// The text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = ParseError;
            fn try_from(v: String) -> Result<Self, Self::Error> {
                Self::parse(&v)
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

bounded_text!(
    /// A product title, or the name of a merchant or category: 1–200 characters.
    Title, "title", 1..=200
);
bounded_text!(
    /// A product description: up to 10,000 characters.
    Description, "description", 0..=10000
);

impl Default for Description {
    /// The empty description.
    fn default() -> Self {
        Self(String::new())
    }
}

/// A stock-keeping unit code, unique within its merchant: 1–64 of `A–Z 0–9 - _ .`.
/// Codes are case-insensitive and kept upper-cased, so `tea-1` and `TEA-1` are one SKU on
/// every backend.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Sku(String);

impl Sku {
    /// Parses a SKU code, upper-casing it.
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let s = raw.trim().to_ascii_uppercase();
        if !(1..=64).contains(&s.len()) {
            return Err(ParseError::new("sku", "must be 1 to 64 characters"));
        }
        if !s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
            return Err(ParseError::new("sku", "may contain only letters, digits, '-', '_' and '.'"));
        }
        Ok(Self(s))
    }

    /// The code.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Sku {
    type Error = ParseError;
    fn try_from(v: String) -> Result<Self, Self::Error> {
        Self::parse(&v)
    }
}

impl From<Sku> for String {
    fn from(v: Sku) -> String {
        v.0
    }
}

/// An absolute `http` or `https` URL of a product image, at most 2048 bytes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ImageUrl(String);

impl ImageUrl {
    /// Checks the scheme, that a host follows it, and the length.
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let s = raw.trim();
        let rest = s.strip_prefix("https://").or_else(|| s.strip_prefix("http://"));
        let host_ok = rest.is_some_and(|r| r.split(['/', '?', '#']).next().is_some_and(|h| !h.is_empty()));
        if !host_ok || s.len() > 2048 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(ParseError::new("images", "each image must be an absolute http(s) URL of at most 2048 bytes"));
        }
        Ok(Self(s.to_owned()))
    }

    /// The URL.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ImageUrl {
    type Error = ParseError;
    fn try_from(v: String) -> Result<Self, Self::Error> {
        Self::parse(&v)
    }
}

impl From<ImageUrl> for String {
    fn from(v: ImageUrl) -> String {
        v.0
    }
}

/// Up to 20 image URLs, in display order.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "Vec<ImageUrl>", into = "Vec<ImageUrl>")]
pub struct Images(Vec<ImageUrl>);

impl Images {
    /// The most images a product may have.
    pub const MAX: usize = 20;

    /// The URLs.
    pub fn as_slice(&self) -> &[ImageUrl] {
        &self.0
    }
}

impl TryFrom<Vec<ImageUrl>> for Images {
    type Error = ParseError;
    fn try_from(v: Vec<ImageUrl>) -> Result<Self, Self::Error> {
        if v.len() > Self::MAX {
            return Err(ParseError::new("images", format!("at most {} images", Self::MAX)));
        }
        Ok(Self(v))
    }
}

impl From<Images> for Vec<ImageUrl> {
    fn from(v: Images) -> Self {
        v.0
    }
}

/// Whether a product can be bought.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProductStatus {
    /// Listed and for sale.
    OnShelf,
    /// Hidden from public listings; its detail still answers, marked as off shelf.
    OffShelf,
}

impl ProductStatus {
    /// The stored and serialised name.
    pub fn as_str(self) -> &'static str {
        match self {
            ProductStatus::OnShelf => "on_shelf",
            ProductStatus::OffShelf => "off_shelf",
        }
    }
}

impl FromStr for ProductStatus {
    type Err = ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "on_shelf" => Ok(Self::OnShelf),
            "off_shelf" => Ok(Self::OffShelf),
            _ => Err(ParseError::new("status", "must be on_shelf or off_shelf")),
        }
    }
}

/// A count of units in stock: 0 to [`Stock::MAX`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct Stock(i64);

impl Stock {
    /// The most units one SKU may hold.
    pub const MAX: i64 = 1_000_000_000;

    /// Parses a unit count.
    pub fn new(v: i64) -> Result<Self, ParseError> {
        if !(0..=Self::MAX).contains(&v) {
            return Err(ParseError::new("available", format!("must be 0 to {}", Self::MAX)));
        }
        Ok(Self(v))
    }

    /// The count.
    pub fn get(self) -> i64 {
        self.0
    }
}

impl TryFrom<i64> for Stock {
    type Error = ParseError;
    fn try_from(v: i64) -> Result<Self, Self::Error> {
        Self::new(v)
    }
}

impl From<Stock> for i64 {
    fn from(s: Stock) -> i64 {
        s.0
    }
}

/// A sales region: an ISO 3166-1 country code, optionally with a subdivision (`CN`, `CN-ZJ`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Region(String);

impl Region {
    /// Parses and upper-cases a region code.
    pub fn parse(raw: &str) -> Result<Self, ParseError> {
        let s = raw.trim().to_ascii_uppercase();
        let (country, sub) = match s.split_once('-') {
            Some((c, sub)) => (c, Some(sub)),
            None => (s.as_str(), None),
        };
        let country_ok = country.len() == 2 && country.bytes().all(|b| b.is_ascii_uppercase());
        let sub_ok = sub.is_none_or(|x| (1..=3).contains(&x.len()) && x.bytes().all(|b| b.is_ascii_alphanumeric()));
        if !country_ok || !sub_ok {
            return Err(ParseError::new("regions", "each region must look like CN or CN-ZJ"));
        }
        Ok(Self(s))
    }

    /// The code.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Region {
    type Error = ParseError;
    fn try_from(v: String) -> Result<Self, Self::Error> {
        Self::parse(&v)
    }
}

impl From<Region> for String {
    fn from(v: Region) -> String {
        v.0
    }
}

/// The regions a SKU sells in: sorted, without duplicates, at most 64.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(try_from = "Vec<Region>", into = "Vec<Region>")]
pub struct Regions(Vec<Region>);

impl Regions {
    /// The most regions one SKU may list.
    pub const MAX: usize = 64;

    /// The regions.
    pub fn as_slice(&self) -> &[Region] {
        &self.0
    }
}

impl TryFrom<Vec<Region>> for Regions {
    type Error = ParseError;
    fn try_from(mut v: Vec<Region>) -> Result<Self, Self::Error> {
        // Counted as sent: the limit bounds the request, not only what is kept.
        if v.len() > Self::MAX {
            return Err(ParseError::new("regions", format!("at most {} regions", Self::MAX)));
        }
        v.sort();
        v.dedup();
        Ok(Self(v))
    }
}

impl From<Regions> for Vec<Region> {
    fn from(v: Regions) -> Self {
        v.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skus_titles_and_urls_are_checked() {
        assert_eq!(Sku::parse(" abc-123_x.1 ").unwrap().as_str(), "ABC-123_X.1");
        assert!(Sku::parse("").is_err());
        assert!(Sku::parse("has space").is_err());
        assert_eq!(Title::parse("  茶叶 ").unwrap().as_str(), "茶叶");
        assert!(Title::parse("   ").is_err());
        assert!(Title::parse("bell\u{7}").is_err());
        assert!(ImageUrl::parse("https://img.example/a.jpg").is_ok());
        assert!(ImageUrl::parse("javascript:alert(1)").is_err());
        assert!(ImageUrl::parse("https:///nohost").is_err());
    }

    #[test]
    fn regions_are_normalised_sorted_and_deduplicated() {
        let r: Regions = serde_json::from_str(r#"["cn-zj","CN","cn-zj"]"#).unwrap();
        let codes: Vec<&str> = r.as_slice().iter().map(Region::as_str).collect();
        assert_eq!(codes, ["CN", "CN-ZJ"]);
        assert!(Region::parse("China").is_err());
        assert!(Region::parse("CN-TOOLONG").is_err());
    }

    #[test]
    fn stock_is_bounded() {
        assert!(Stock::new(-1).is_err());
        assert!(Stock::new(Stock::MAX + 1).is_err());
        assert!(serde_json::from_str::<Stock>("1e3").is_err());
    }
}
