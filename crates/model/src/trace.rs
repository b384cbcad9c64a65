//! Trace context: W3C `traceparent` in and out, so a COGO trace joins the caller's distributed trace.
//!
//! Invariant: a parsed context always has a non-zero trace id and parent id (the W3C rules).

use std::fmt;

use rand::RngCore;

/// A W3C trace context: 16-byte trace id, 8-byte parent (span) id and flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceContext {
    /// The trace id, 32 lower-case hex digits when printed.
    pub trace_id: [u8; 16],
    /// The parent span id, 16 lower-case hex digits when printed.
    pub parent_id: [u8; 8],
    /// Trace flags (bit 0: sampled).
    pub flags: u8,
}

/// Why a `traceparent` header was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TraceParseError {
    /// The header does not have the four dash-separated fields of the right lengths.
    #[error("traceparent must look like 00-<32 hex>-<16 hex>-<2 hex>, got {0:?}")]
    Shape(String),
    /// A field holds something other than lower-case hex.
    #[error("traceparent field {field} is not lower-case hex")]
    Hex {
        /// Which field.
        field: &'static str,
    },
    /// Version `ff` is forbidden by the specification.
    #[error("traceparent version ff is invalid")]
    Version,
    /// An all-zero trace or parent id.
    #[error("traceparent {field} must not be all zeros")]
    Zero {
        /// Which field.
        field: &'static str,
    },
}

impl TraceContext {
    /// A new root context from random bytes (sampled).
    pub fn from_random(random: &mut impl RngCore) -> Self {
        let mut trace_id = [0u8; 16];
        let mut parent_id = [0u8; 8];
        loop {
            random.fill_bytes(&mut trace_id);
            random.fill_bytes(&mut parent_id);
            if trace_id != [0; 16] && parent_id != [0; 8] {
                return Self { trace_id, parent_id, flags: 1 };
            }
        }
    }

    /// A new root context: the trace id begins with the current time (see `from_time_and_random`).
    pub fn new_root() -> Self {
        let unix_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX));
        Self::from_time_and_random(unix_ms, &mut rand::rng())
    }

    /// A new root context whose trace id begins with `unix_ms` (its low 48 bits, big-endian) and
    /// ends with ten random bytes, more than the seven random rightmost bytes Trace Context
    /// level 2 asks of a trace id. Trace ids made later sort after earlier ones, so the indexes on
    /// `trace_id` grow at one end instead of taking each new trace at a random place: fewer pages
    /// change per commit.
    pub fn from_time_and_random(unix_ms: u64, random: &mut impl RngCore) -> Self {
        let mut context = Self::from_random(random);
        if unix_ms > 0 {
            context.trace_id[..6].copy_from_slice(&unix_ms.to_be_bytes()[2..]);
        }
        context
    }

    /// Parses a `traceparent` header value. Future versions (not `00`, not `ff`) are accepted when
    /// their first four fields parse, as the specification asks.
    pub fn parse(header: &str) -> Result<Self, TraceParseError> {
        let header = header.trim();
        let mut parts = header.split('-');
        let (Some(version), Some(trace), Some(parent), Some(flags)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(TraceParseError::Shape(truncate(header)));
        };
        let extra = parts.next();
        if version.len() != 2 || trace.len() != 32 || parent.len() != 16 || flags.len() != 2 {
            return Err(TraceParseError::Shape(truncate(header)));
        }
        let version = hex_byte(version).ok_or(TraceParseError::Hex { field: "version" })?;
        if version == 0xff {
            return Err(TraceParseError::Version);
        }
        if version == 0 && extra.is_some() {
            return Err(TraceParseError::Shape(truncate(header)));
        }
        let mut trace_id = [0u8; 16];
        decode_hex(trace, &mut trace_id).ok_or(TraceParseError::Hex { field: "trace-id" })?;
        let mut parent_id = [0u8; 8];
        decode_hex(parent, &mut parent_id).ok_or(TraceParseError::Hex { field: "parent-id" })?;
        let flags = hex_byte(flags).ok_or(TraceParseError::Hex { field: "trace-flags" })?;
        if trace_id == [0; 16] {
            return Err(TraceParseError::Zero { field: "trace-id" });
        }
        if parent_id == [0; 8] {
            return Err(TraceParseError::Zero { field: "parent-id" });
        }
        Ok(Self { trace_id, parent_id, flags })
    }

    /// The trace id as 32 lower-case hex digits (the form stored in `trace_id` columns).
    pub fn trace_id_hex(&self) -> String {
        encode_hex(&self.trace_id)
    }

    /// A child context: same trace, a new parent id.
    pub fn child(&self, random: &mut impl RngCore) -> Self {
        let mut parent_id = [0u8; 8];
        while parent_id == [0; 8] {
            random.fill_bytes(&mut parent_id);
        }
        Self { parent_id, ..*self }
    }
}

impl fmt::Display for TraceContext {
    /// The `traceparent` header value (version 00).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "00-{}-{}-{:02x}", encode_hex(&self.trace_id), encode_hex(&self.parent_id), self.flags)
    }
}

/// Whether `value` is a valid stored trace id: 32 lower-case hex digits, not all zero.
pub fn is_valid_trace_id(value: &str) -> bool {
    let mut bytes = [0u8; 16];
    value.len() == 32 && decode_hex(value, &mut bytes).is_some() && bytes != [0; 16]
}

fn truncate(value: &str) -> String {
    value.chars().take(80).collect()
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

fn hex_byte(s: &str) -> Option<u8> {
    let b = s.as_bytes();
    Some(hex_val(b[0])? << 4 | hex_val(b[1])?)
}

fn decode_hex(s: &str, out: &mut [u8]) -> Option<()> {
    let b = s.as_bytes();
    if b.len() != out.len() * 2 {
        return None;
    }
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = hex_val(b[2 * i])? << 4 | hex_val(b[2 * i + 1])?;
    }
    Some(())
}

fn encode_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 0xf) as usize] as char);
    }
    out
}

#[cfg(test)]
mod tests;
