//! A small plain-CDR codec for the flat struct types described in the config (`[[dds.topic]]`
//! `fields`). Sans-IO: bytes in, values out. It is what lets the face find the instance key in a
//! sample it stores as raw bytes, compute the RTPS key hash, render a sample as JSON and build one
//! from JSON.
//!
//! Supported: final (non-appendable) structs of `bool`, `octet`, signed/unsigned 16/32/64-bit
//! integers, `float32`/`float64`, `string` and `bytes` (`sequence<octet>`), in XCDR1
//! (`CDR_BE`/`CDR_LE`, 8-byte types aligned to 8) or XCDR2 (`CDR2_BE`/`CDR2_LE`, aligned to at
//! most 4). Alignment counts from the first byte after the 4-byte encapsulation header.

use serde::{Deserialize, Serialize};

use super::error::DdsError;

/// Encapsulation identifier: XCDR1 big endian.
pub const CDR_BE: [u8; 2] = [0x00, 0x00];
/// Encapsulation identifier: XCDR1 little endian.
pub const CDR_LE: [u8; 2] = [0x00, 0x01];
/// Encapsulation identifier: XCDR2 big endian (plain, final types).
pub const CDR2_BE: [u8; 2] = [0x00, 0x06];
/// Encapsulation identifier: XCDR2 little endian (plain, final types).
pub const CDR2_LE: [u8; 2] = [0x00, 0x07];
/// Length of the encapsulation header in front of every serialized payload.
pub const HEADER_BYTES: usize = 4;
/// Most fields a described type may have.
pub const FIELDS_MAX: usize = 64;
/// Longest string or byte sequence accepted from the wire (or from JSON).
pub const SEQUENCE_BYTES_MAX: u32 = 4 * 1024 * 1024;

/// The type of one field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    /// `boolean` (1 byte, 0 or 1).
    Bool,
    /// `octet` / `uint8`.
    Octet,
    /// `int16`.
    Int16,
    /// `uint16`.
    Uint16,
    /// `int32` / `long`.
    Int32,
    /// `uint32`.
    Uint32,
    /// `int64` / `long long`.
    Int64,
    /// `uint64`.
    Uint64,
    /// `float`.
    Float32,
    /// `double`.
    Float64,
    /// Unbounded `string` (UTF-8).
    String,
    /// `sequence<octet>`; JSON renders it as an array of numbers.
    Bytes,
}

impl FieldType {
    /// Size of the primitive, or `None` for the variable-length types.
    fn fixed_bytes(self) -> Option<usize> {
        match self {
            FieldType::Bool | FieldType::Octet => Some(1),
            FieldType::Int16 | FieldType::Uint16 => Some(2),
            FieldType::Int32 | FieldType::Uint32 | FieldType::Float32 => Some(4),
            FieldType::Int64 | FieldType::Uint64 | FieldType::Float64 => Some(8),
            FieldType::String | FieldType::Bytes => None,
        }
    }
}

/// One field of a described struct.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldDesc {
    /// Field name (JSON member name).
    pub name: String,
    /// Field type.
    #[serde(rename = "type")]
    pub ty: FieldType,
    /// Part of the instance key (`@key`).
    #[serde(default)]
    pub key: bool,
}

/// A flat struct type: fields in declaration order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TypeDesc {
    /// The fields.
    pub fields: Vec<FieldDesc>,
}

/// One decoded field value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A boolean.
    Bool(bool),
    /// Any unsigned integer.
    U(u64),
    /// Any signed integer.
    I(i64),
    /// Any float.
    F(f64),
    /// A string.
    Str(String),
    /// A byte sequence.
    Bytes(Vec<u8>),
}

/// Byte order and alignment rule of a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encoding {
    /// Big endian.
    pub big_endian: bool,
    /// XCDR2 (8-byte types aligned to 4).
    pub xcdr2: bool,
}

impl Encoding {
    /// XCDR1 little endian: what the face writes.
    pub const XCDR1_LE: Encoding = Encoding {
        big_endian: false,
        xcdr2: false,
    };
    /// XCDR1 big endian: the key-hash serialization.
    pub const XCDR1_BE: Encoding = Encoding {
        big_endian: true,
        xcdr2: false,
    };

    /// The encoding named by a representation identifier, if supported.
    pub fn from_id(id: [u8; 2]) -> Option<Encoding> {
        match id {
            CDR_BE => Some(Encoding {
                big_endian: true,
                xcdr2: false,
            }),
            CDR_LE => Some(Encoding {
                big_endian: false,
                xcdr2: false,
            }),
            CDR2_BE => Some(Encoding {
                big_endian: true,
                xcdr2: true,
            }),
            CDR2_LE => Some(Encoding {
                big_endian: false,
                xcdr2: true,
            }),
            _ => None,
        }
    }

    /// The representation identifier of this encoding.
    pub fn id(self) -> [u8; 2] {
        match (self.big_endian, self.xcdr2) {
            (true, false) => CDR_BE,
            (false, false) => CDR_LE,
            (true, true) => CDR2_BE,
            (false, true) => CDR2_LE,
        }
    }

    fn align_of(self, size: usize) -> usize {
        if self.xcdr2 {
            size.min(4)
        } else {
            size
        }
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    enc: Encoding,
}

impl<'a> Reader<'a> {
    fn align(&mut self, size: usize) -> Result<(), DdsError> {
        let a = self.enc.align_of(size);
        let aligned = self.pos.div_ceil(a) * a;
        if aligned > self.buf.len() {
            return Err(DdsError::Undecodable("truncated (padding)".into()));
        }
        self.pos = aligned;
        Ok(())
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DdsError> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or_else(|| DdsError::Undecodable(format!("truncated at byte {}", self.pos)))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn prim<const N: usize>(&mut self) -> Result<[u8; N], DdsError> {
        self.align(N)?;
        let s = self.take(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        if !self.enc.big_endian {
            a.reverse();
        }
        Ok(a) // big-endian order from here on
    }

    fn len(&mut self) -> Result<usize, DdsError> {
        let n = u32::from_be_bytes(self.prim::<4>()?);
        if n > SEQUENCE_BYTES_MAX {
            return Err(DdsError::Undecodable(format!(
                "sequence of {n} bytes exceeds the limit of {SEQUENCE_BYTES_MAX}"
            )));
        }
        Ok(n as usize)
    }

    fn value(&mut self, ty: FieldType) -> Result<Value, DdsError> {
        Ok(match ty {
            FieldType::Bool => match self.take(1)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(DdsError::Undecodable(format!("boolean byte {b}"))),
            },
            FieldType::Octet => Value::U(u64::from(self.take(1)?[0])),
            FieldType::Int16 => Value::I(i64::from(i16::from_be_bytes(self.prim()?))),
            FieldType::Uint16 => Value::U(u64::from(u16::from_be_bytes(self.prim()?))),
            FieldType::Int32 => Value::I(i64::from(i32::from_be_bytes(self.prim()?))),
            FieldType::Uint32 => Value::U(u64::from(u32::from_be_bytes(self.prim()?))),
            FieldType::Int64 => Value::I(i64::from_be_bytes(self.prim()?)),
            FieldType::Uint64 => Value::U(u64::from_be_bytes(self.prim()?)),
            FieldType::Float32 => Value::F(f64::from(f32::from_be_bytes(self.prim()?))),
            FieldType::Float64 => Value::F(f64::from_be_bytes(self.prim()?)),
            FieldType::String => {
                let n = self.len()?;
                if n == 0 {
                    return Err(DdsError::Undecodable("string without terminator".into()));
                }
                let s = self.take(n)?;
                let (body, nul) = s.split_at(n - 1);
                if nul != [0] {
                    return Err(DdsError::Undecodable("string not NUL-terminated".into()));
                }
                let text = std::str::from_utf8(body)
                    .map_err(|_| DdsError::Undecodable("string is not UTF-8".into()))?;
                Value::Str(text.to_owned())
            }
            FieldType::Bytes => {
                let n = self.len()?;
                Value::Bytes(self.take(n)?.to_vec())
            }
        })
    }
}

struct Writer {
    out: Vec<u8>,
    enc: Encoding,
}

impl Writer {
    fn align(&mut self, size: usize) {
        let a = self.enc.align_of(size);
        while !self.out.len().is_multiple_of(a) {
            self.out.push(0);
        }
    }

    fn prim(&mut self, be: &[u8]) {
        self.align(be.len());
        if self.enc.big_endian {
            self.out.extend_from_slice(be);
        } else {
            self.out.extend(be.iter().rev());
        }
    }

    fn value(&mut self, ty: FieldType, v: &Value) -> Result<(), DdsError> {
        let bad = || DdsError::Invalid(format!("value {v:?} does not fit type {ty:?}"));
        match (ty, v) {
            (FieldType::Bool, Value::Bool(b)) => self.out.push(u8::from(*b)),
            (FieldType::Octet, _) => self
                .out
                .push(u8::try_from(as_u64(v).ok_or_else(bad)?).map_err(|_| bad())?),
            (FieldType::Int16, _) => self.prim(
                &i16::try_from(as_i64(v).ok_or_else(bad)?)
                    .map_err(|_| bad())?
                    .to_be_bytes(),
            ),
            (FieldType::Uint16, _) => self.prim(
                &u16::try_from(as_u64(v).ok_or_else(bad)?)
                    .map_err(|_| bad())?
                    .to_be_bytes(),
            ),
            (FieldType::Int32, _) => self.prim(
                &i32::try_from(as_i64(v).ok_or_else(bad)?)
                    .map_err(|_| bad())?
                    .to_be_bytes(),
            ),
            (FieldType::Uint32, _) => self.prim(
                &u32::try_from(as_u64(v).ok_or_else(bad)?)
                    .map_err(|_| bad())?
                    .to_be_bytes(),
            ),
            (FieldType::Int64, _) => self.prim(&as_i64(v).ok_or_else(bad)?.to_be_bytes()),
            (FieldType::Uint64, _) => self.prim(&as_u64(v).ok_or_else(bad)?.to_be_bytes()),
            #[allow(clippy::cast_possible_truncation)]
            (FieldType::Float32, Value::F(f)) => self.prim(&(*f as f32).to_be_bytes()),
            (FieldType::Float64, Value::F(f)) => self.prim(&f.to_be_bytes()),
            (FieldType::String, Value::Str(s)) => {
                let n = u32::try_from(s.len() + 1)
                    .ok()
                    .filter(|n| *n <= SEQUENCE_BYTES_MAX)
                    .ok_or_else(|| DdsError::Invalid("string too long".into()))?;
                if s.as_bytes().contains(&0) {
                    return Err(DdsError::Invalid("string contains NUL".into()));
                }
                self.prim(&n.to_be_bytes());
                self.out.extend_from_slice(s.as_bytes());
                self.out.push(0);
            }
            (FieldType::Bytes, Value::Bytes(b)) => {
                let n = u32::try_from(b.len())
                    .ok()
                    .filter(|n| *n <= SEQUENCE_BYTES_MAX)
                    .ok_or_else(|| DdsError::Invalid("byte sequence too long".into()))?;
                self.prim(&n.to_be_bytes());
                self.out.extend_from_slice(b);
            }
            _ => return Err(bad()),
        }
        Ok(())
    }
}

fn as_u64(v: &Value) -> Option<u64> {
    match v {
        Value::U(u) => Some(*u),
        Value::I(i) => u64::try_from(*i).ok(),
        _ => None,
    }
}

fn as_i64(v: &Value) -> Option<i64> {
    match v {
        Value::I(i) => Some(*i),
        Value::U(u) => i64::try_from(*u).ok(),
        _ => None,
    }
}

/// Splits a stored/wire sample into its encoding and body (the bytes after the header).
pub fn split_header(sample: &[u8]) -> Result<(Encoding, &[u8]), DdsError> {
    if sample.len() < HEADER_BYTES {
        return Err(DdsError::Undecodable(
            "shorter than the encapsulation header".into(),
        ));
    }
    let id = [sample[0], sample[1]];
    let enc = Encoding::from_id(id).ok_or_else(|| {
        DdsError::Undecodable(format!(
            "unsupported encapsulation {:02x}{:02x}",
            id[0], id[1]
        ))
    })?;
    Ok((enc, &sample[HEADER_BYTES..]))
}

impl TypeDesc {
    /// Checks the description: 1..=FIELDS_MAX uniquely named fields, at least one key field.
    pub fn validate(&self) -> Result<(), DdsError> {
        if self.fields.is_empty() || self.fields.len() > FIELDS_MAX {
            return Err(DdsError::Config(format!(
                "a type needs 1..={FIELDS_MAX} fields, got {}",
                self.fields.len()
            )));
        }
        let mut names: Vec<&str> = self.fields.iter().map(|f| f.name.as_str()).collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w[0] == w[1]) {
            return Err(DdsError::Config("duplicate field name".into()));
        }
        if !self.fields.iter().any(|f| f.key) {
            return Err(DdsError::Config(
                "no key field (mark one with key = true)".into(),
            ));
        }
        Ok(())
    }

    fn key_fields(&self) -> impl Iterator<Item = &FieldDesc> {
        self.fields.iter().filter(|f| f.key)
    }

    /// Decodes a whole sample body (no header) into one value per field.
    pub fn decode(&self, body: &[u8], enc: Encoding) -> Result<Vec<Value>, DdsError> {
        let mut r = Reader {
            buf: body,
            pos: 0,
            enc,
        };
        self.fields.iter().map(|f| r.value(f.ty)).collect()
    }

    /// Decodes a key-only body (the key fields in order, as a dispose carries them).
    pub fn decode_key_only(&self, body: &[u8], enc: Encoding) -> Result<Vec<Value>, DdsError> {
        let mut r = Reader {
            buf: body,
            pos: 0,
            enc,
        };
        self.key_fields().map(|f| r.value(f.ty)).collect()
    }

    /// Picks the key field values out of a full decode.
    pub fn key_values(&self, values: &[Value]) -> Vec<Value> {
        self.fields
            .iter()
            .zip(values)
            .filter(|(f, _)| f.key)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Encodes one value per field (no header).
    pub fn encode(&self, values: &[Value], enc: Encoding) -> Result<Vec<u8>, DdsError> {
        if values.len() != self.fields.len() {
            return Err(DdsError::Invalid("wrong number of field values".into()));
        }
        let mut w = Writer {
            out: Vec::new(),
            enc,
        };
        for (f, v) in self.fields.iter().zip(values) {
            w.value(f.ty, v)?;
        }
        Ok(w.out)
    }

    /// Encodes the key field values alone (no header): the key-only payload of a dispose.
    pub fn encode_key_only(&self, key: &[Value], enc: Encoding) -> Result<Vec<u8>, DdsError> {
        let mut w = Writer {
            out: Vec::new(),
            enc,
        };
        let fields: Vec<&FieldDesc> = self.key_fields().collect();
        if fields.len() != key.len() {
            return Err(DdsError::Invalid("wrong number of key values".into()));
        }
        for (f, v) in fields.into_iter().zip(key) {
            w.value(f.ty, v)?;
        }
        Ok(w.out)
    }

    /// The RTPS key hash (RTPS 2.5 §9.6.4.8): the big-endian XCDR1 serialization of the key
    /// fields, zero-padded to 16 bytes when its maximum size fits, else its MD5 digest.
    pub fn key_hash(&self, key: &[Value]) -> Result<[u8; 16], DdsError> {
        let be = self.encode_key_only(key, Encoding::XCDR1_BE)?;
        match self.key_max_bytes() {
            Some(max) if max <= 16 => {
                let mut h = [0u8; 16];
                h[..be.len()].copy_from_slice(&be);
                Ok(h)
            }
            _ => Ok(md5::compute(&be).0),
        }
    }

    /// Largest size of the key serialization, `None` when unbounded (strings, sequences).
    fn key_max_bytes(&self) -> Option<usize> {
        let mut pos = 0usize;
        for f in self.key_fields() {
            let n = f.ty.fixed_bytes()?;
            pos = pos.div_ceil(n) * n + n;
        }
        Some(pos)
    }

    /// The store key of an instance: its key values as text, joined by `/`.
    pub fn key_text(key: &[Value]) -> String {
        let parts: Vec<String> = key
            .iter()
            .map(|v| match v {
                Value::Bool(b) => b.to_string(),
                Value::U(u) => u.to_string(),
                Value::I(i) => i.to_string(),
                Value::F(f) => f.to_string(),
                Value::Str(s) => s.clone(),
                Value::Bytes(b) => b.iter().map(|x| format!("{x:02x}")).collect(),
            })
            .collect();
        parts.join("/")
    }

    /// Renders a sample (with header) as a JSON object.
    pub fn to_json(&self, sample: &[u8]) -> Result<serde_json::Value, DdsError> {
        let (enc, body) = split_header(sample)?;
        let values = self.decode(body, enc)?;
        let mut map = serde_json::Map::new();
        for (f, v) in self.fields.iter().zip(values) {
            let j = match v {
                Value::Bool(b) => serde_json::Value::from(b),
                Value::U(u) => serde_json::Value::from(u),
                Value::I(i) => serde_json::Value::from(i),
                Value::F(x) => serde_json::Value::from(x),
                Value::Str(s) => serde_json::Value::from(s),
                Value::Bytes(b) => serde_json::Value::from(b),
            };
            map.insert(f.name.clone(), j);
        }
        Ok(serde_json::Value::Object(map))
    }

    /// Builds a sample (XCDR1 little endian, with header) from a JSON object.
    pub fn from_json(&self, json: &serde_json::Value) -> Result<Vec<u8>, DdsError> {
        let obj = json
            .as_object()
            .ok_or_else(|| DdsError::Invalid("expected a JSON object".into()))?;
        let mut values = Vec::with_capacity(self.fields.len());
        for f in &self.fields {
            let j = obj
                .get(&f.name)
                .ok_or_else(|| DdsError::Invalid(format!("missing field {}", f.name)))?;
            let bad = || DdsError::Invalid(format!("field {} does not fit {:?}", f.name, f.ty));
            let v = match f.ty {
                FieldType::Bool => Value::Bool(j.as_bool().ok_or_else(bad)?),
                FieldType::Octet | FieldType::Uint16 | FieldType::Uint32 | FieldType::Uint64 => {
                    Value::U(j.as_u64().ok_or_else(bad)?)
                }
                FieldType::Int16 | FieldType::Int32 | FieldType::Int64 => {
                    Value::I(j.as_i64().ok_or_else(bad)?)
                }
                FieldType::Float32 | FieldType::Float64 => Value::F(j.as_f64().ok_or_else(bad)?),
                FieldType::String => Value::Str(j.as_str().ok_or_else(bad)?.to_owned()),
                FieldType::Bytes => {
                    let arr = j.as_array().ok_or_else(bad)?;
                    let mut b = Vec::with_capacity(arr.len().min(SEQUENCE_BYTES_MAX as usize));
                    for x in arr {
                        b.push(
                            x.as_u64()
                                .and_then(|x| u8::try_from(x).ok())
                                .ok_or_else(bad)?,
                        );
                    }
                    Value::Bytes(b)
                }
            };
            values.push(v);
        }
        let body = self.encode(&values, Encoding::XCDR1_LE)?;
        Ok(with_header(Encoding::XCDR1_LE, &body))
    }

    /// Re-encodes a sample (with header) as XCDR1 little endian without header, the form the
    /// face hands to its DDS writer. Returns the body as is when it already is XCDR1 LE.
    pub fn to_xcdr1_le_body(&self, sample: &[u8]) -> Result<(Vec<u8>, Vec<Value>), DdsError> {
        let (enc, body) = split_header(sample)?;
        let values = self.decode(body, enc)?;
        if enc == Encoding::XCDR1_LE {
            return Ok((body.to_vec(), values));
        }
        Ok((self.encode(&values, Encoding::XCDR1_LE)?, values))
    }
}

/// Prefixes a body with its 4-byte encapsulation header (options zero).
pub fn with_header(enc: Encoding, body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(HEADER_BYTES + body.len());
    v.extend_from_slice(&enc.id());
    v.extend_from_slice(&[0, 0]);
    v.extend_from_slice(body);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flight_plan() -> TypeDesc {
        TypeDesc {
            fields: vec![
                FieldDesc {
                    name: "flight_id".into(),
                    ty: FieldType::String,
                    key: true,
                },
                FieldDesc {
                    name: "version".into(),
                    ty: FieldType::Uint64,
                    key: false,
                },
                FieldDesc {
                    name: "route".into(),
                    ty: FieldType::String,
                    key: false,
                },
            ],
        }
    }

    #[test]
    fn xcdr1_layout_aligns_u64_to_8_after_a_string() {
        // "FP1": len 4 (incl. NUL) + 4 bytes = 8, so the u64 starts at 8 without padding;
        // "FP12": len 5 + 5 bytes = 9, padded to 16.
        let t = flight_plan();
        let v = vec![
            Value::Str("FP12".into()),
            Value::U(7),
            Value::Str("R".into()),
        ];
        let body = t.encode(&v, Encoding::XCDR1_LE).unwrap();
        assert_eq!(&body[0..4], &5u32.to_le_bytes());
        assert_eq!(&body[16..24], &7u64.to_le_bytes());
        assert_eq!(t.decode(&body, Encoding::XCDR1_LE).unwrap(), v);
        // XCDR2 aligns 8-byte types to 4 only.
        let body2 = t
            .encode(
                &v,
                Encoding {
                    big_endian: true,
                    xcdr2: true,
                },
            )
            .unwrap();
        assert_eq!(&body2[12..20], &7u64.to_be_bytes());
    }

    #[test]
    fn json_round_trip_and_transcode() {
        let t = flight_plan();
        let j = serde_json::json!({"flight_id": "AF12", "version": 3, "route": "CDG-JFK"});
        let sample = t.from_json(&j).unwrap();
        assert_eq!(&sample[0..2], &CDR_LE);
        assert_eq!(t.to_json(&sample).unwrap(), j);
        let (enc, body) = split_header(&sample).unwrap();
        let be = with_header(
            Encoding::XCDR1_BE,
            &t.encode(&t.decode(body, enc).unwrap(), Encoding::XCDR1_BE)
                .unwrap(),
        );
        let (le_body, _) = t.to_xcdr1_le_body(&be).unwrap();
        assert_eq!(le_body, body);
    }

    #[test]
    fn key_hash_is_md5_for_strings_and_padded_for_small_fixed_keys() {
        let t = flight_plan();
        let k = vec![Value::Str("FP1".into())];
        let be = [0, 0, 0, 4, b'F', b'P', b'1', 0];
        assert_eq!(t.key_hash(&k).unwrap(), md5::compute(be).0);
        let t2 = TypeDesc {
            fields: vec![FieldDesc {
                name: "id".into(),
                ty: FieldType::Uint32,
                key: true,
            }],
        };
        let mut want = [0u8; 16];
        want[..4].copy_from_slice(&9u32.to_be_bytes());
        assert_eq!(t2.key_hash(&[Value::U(9)]).unwrap(), want);
    }

    #[test]
    fn bad_input_is_an_error_not_a_panic() {
        let t = flight_plan();
        let enc = Encoding::XCDR1_LE;
        assert!(t.decode(&[], enc).is_err());
        assert!(t.decode(&[0xff, 0xff, 0xff, 0xff], enc).is_err()); // huge length
        assert!(t.decode(&[1, 0, 0, 0, b'x'], enc).is_err()); // no NUL
        assert!(t.decode(&[2, 0, 0, 0, 0xc3, 0], enc).is_err()); // bad UTF-8
        assert!(split_header(&[0x7f, 0x7f, 0, 0]).is_err());
        // Every prefix of a valid sample fails cleanly.
        let v = vec![
            Value::Str("FP1".into()),
            Value::U(1),
            Value::Str("R".into()),
        ];
        let body = t.encode(&v, enc).unwrap();
        for n in 0..body.len() {
            assert!(t.decode(&body[..n], enc).is_err(), "prefix {n}");
        }
    }
}
