//! The sample type the face hands to rustdds: raw serialized bytes plus the instance key found
//! in them, with the (de)serializer adapters that keep the bytes as they came off the wire.
//!
//! rustdds decodes with a decoder *constant* (`DefaultDecoder::DECODER`), so a decoder cannot
//! carry the topic's type description. The face therefore installs the description in a
//! thread-local of the thread that owns the topic's reader ([`TypeScope`]); the decoder reads
//! it there. Nothing else touches that thread-local.

use std::cell::RefCell;
use std::sync::Arc;

use bytes::Bytes;
use rustdds::dds::key::{CdrEncodingMaxSize, CdrEncodingSize, KeyHash};
use rustdds::{Key, Keyed, RepresentationIdentifier};

use super::cdr::{self, Encoding, TypeDesc, Value};
use super::error::DdsError;

/// The instance key of a sample: its RTPS key hash, its store key text, and the key-only
/// payload (XCDR1 little endian) a dispose carries. Ordered and compared by hash first.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InstanceKey {
    /// RTPS key hash.
    pub hash: [u8; 16],
    /// The store key (key values as text, joined by `/`).
    pub text: String,
    /// Key-only serialization, XCDR1 little endian, no header.
    pub key_only_le: Vec<u8>,
}

impl InstanceKey {
    /// Builds the key of an instance from its key field values.
    pub fn from_values(ty: &TypeDesc, key: &[Value]) -> Result<Self, DdsError> {
        Ok(InstanceKey {
            hash: ty.key_hash(key)?,
            text: TypeDesc::key_text(key),
            key_only_le: ty.encode_key_only(key, Encoding::XCDR1_LE)?,
        })
    }
}

impl serde::Serialize for InstanceKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

impl CdrEncodingSize for InstanceKey {
    fn cdr_encoding_max_size() -> CdrEncodingMaxSize {
        CdrEncodingMaxSize::Unbounded
    }
}

impl Key for InstanceKey {
    fn hash_key(&self, _force_md5: bool) -> KeyHash {
        // Our hash already follows RTPS 9.6.4.8 for the described type; rustdds's default
        // would hash the serde form of this struct instead.
        KeyHash::from_pl_cdr_bytes(self.hash.to_vec()).unwrap_or_else(|_| KeyHash::zero())
    }
}

/// A sample: encapsulation identifier, the body after the header, and its instance key.
#[derive(Debug, Clone)]
pub struct RawSample {
    /// Representation identifier of `body`.
    pub enc: [u8; 2],
    /// The serialized sample without its 4-byte header.
    pub body: Bytes,
    /// The instance.
    pub key: InstanceKey,
}

impl RawSample {
    /// The sample as the store keeps it: header (options zero) then body.
    pub fn to_stored(&self) -> Bytes {
        let mut v = Vec::with_capacity(cdr::HEADER_BYTES + self.body.len());
        v.extend_from_slice(&self.enc);
        v.extend_from_slice(&[0, 0]);
        v.extend_from_slice(&self.body);
        Bytes::from(v)
    }
}

impl Keyed for RawSample {
    type K = InstanceKey;
    fn key(&self) -> InstanceKey {
        self.key.clone()
    }
}

thread_local! {
    static CURRENT_TYPE: RefCell<Option<Arc<TypeDesc>>> = const { RefCell::new(None) };
}

/// Installs a type description for the decoder while alive (restores the previous on drop).
pub struct TypeScope {
    previous: Option<Arc<TypeDesc>>,
}

impl TypeScope {
    /// Makes `ty` the current decode type on this thread.
    pub fn enter(ty: &Arc<TypeDesc>) -> TypeScope {
        let previous = CURRENT_TYPE.with(|c| c.replace(Some(Arc::clone(ty))));
        TypeScope { previous }
    }
}

impl Drop for TypeScope {
    fn drop(&mut self) {
        let previous = self.previous.take();
        CURRENT_TYPE.with(|c| *c.borrow_mut() = previous);
    }
}

impl std::fmt::Debug for TypeScope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TypeScope")
    }
}

fn current_type() -> Result<Arc<TypeDesc>, DdsError> {
    CURRENT_TYPE
        .with(|c| c.borrow().clone())
        .ok_or_else(|| DdsError::Undecodable("no type in scope (decoded outside TypeScope)".into()))
}

/// The rustdds (de)serializer adapter for [`RawSample`].
#[derive(Debug)]
pub struct RawAdapter;

/// The decoder constant used through [`RawAdapter`].
#[derive(Debug, Clone, Copy)]
pub struct RawDecoder;

const ENCODINGS: [RepresentationIdentifier; 4] = [
    RepresentationIdentifier::CDR_LE,
    RepresentationIdentifier::CDR_BE,
    RepresentationIdentifier::CDR2_LE,
    RepresentationIdentifier::CDR2_BE,
];

fn decode_sample(input: &[u8], rep: RepresentationIdentifier) -> Result<RawSample, DdsError> {
    let ty = current_type()?;
    let id = rep.to_bytes();
    let enc = Encoding::from_id(id)
        .ok_or_else(|| DdsError::Undecodable(format!("encapsulation {id:02x?}")))?;
    let values = ty.decode(input, enc)?;
    let key = InstanceKey::from_values(&ty, &ty.key_values(&values))?;
    Ok(RawSample {
        enc: id,
        body: Bytes::copy_from_slice(input),
        key,
    })
}

fn decode_key(input: &[u8], rep: RepresentationIdentifier) -> Result<InstanceKey, DdsError> {
    let ty = current_type()?;
    let id = rep.to_bytes();
    let enc = Encoding::from_id(id)
        .ok_or_else(|| DdsError::Undecodable(format!("key encapsulation {id:02x?}")))?;
    let key = ty.decode_key_only(input, enc)?;
    InstanceKey::from_values(&ty, &key)
}

impl rustdds::no_key::DeserializerAdapter<RawSample> for RawAdapter {
    type Error = DdsError;
    type Decoded = RawSample;
    fn supported_encodings() -> &'static [RepresentationIdentifier] {
        &ENCODINGS
    }
    fn transform_decoded(decoded: RawSample) -> RawSample {
        decoded
    }
}

impl rustdds::with_key::DeserializerAdapter<RawSample> for RawAdapter {
    type DecodedKey = InstanceKey;
    fn transform_decoded_key(decoded_key: InstanceKey) -> InstanceKey {
        decoded_key
    }
}

impl rustdds::no_key::DefaultDecoder<RawSample> for RawAdapter {
    type Decoder = RawDecoder;
    const DECODER: RawDecoder = RawDecoder;
}

impl rustdds::with_key::DefaultDecoder<RawSample> for RawAdapter {
    type Decoder = RawDecoder;
    const DECODER: RawDecoder = RawDecoder;
}

impl<'de> rustdds::no_key::Decode<'de, RawSample> for RawDecoder {
    type Error = DdsError;
    fn decode_bytes(
        self,
        input: &'de [u8],
        rep: RepresentationIdentifier,
    ) -> Result<RawSample, DdsError> {
        decode_sample(input, rep)
    }
}

impl<'de> rustdds::with_key::Decode<'de, RawSample, InstanceKey> for RawDecoder {
    fn decode_key_bytes(
        self,
        input: &'de [u8],
        rep: RepresentationIdentifier,
    ) -> Result<InstanceKey, DdsError> {
        decode_key(input, rep)
    }
}

impl rustdds::no_key::SerializerAdapter<RawSample> for RawAdapter {
    type Error = DdsError;
    fn output_encoding() -> RepresentationIdentifier {
        RepresentationIdentifier::CDR_LE
    }
    fn to_bytes(value: &RawSample) -> Result<Bytes, DdsError> {
        // The face only hands XCDR1 LE bodies to its writers (it transcodes before).
        if value.enc != cdr::CDR_LE {
            return Err(DdsError::Invalid("writer expects an XCDR1 LE body".into()));
        }
        Ok(value.body.clone())
    }
}

impl rustdds::with_key::SerializerAdapter<RawSample> for RawAdapter {
    fn key_to_bytes(value: &InstanceKey) -> Result<Bytes, DdsError> {
        Ok(Bytes::copy_from_slice(&value.key_only_le))
    }
}
