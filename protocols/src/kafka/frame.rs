//! Length-prefixed framing of the Kafka protocol: a big-endian `i32` size, then that many bytes.
//!
//! [`check_frame`] looks at a buffer and says whether a whole frame is there (and how long it is),
//! whether more bytes are needed, or whether the prefix is invalid. The size is checked against
//! the limit (`socket.request.max.bytes`) before anything is allocated for the body.

use super::KafkaError;

/// Kafka's default `socket.request.max.bytes` (100 MiB).
pub const REQUEST_BYTES_MAX_DEFAULT: usize = 100 * 1024 * 1024;
/// The size of the length prefix.
pub const PREFIX_BYTES: usize = 4;
/// The smallest request body: api key (2), api version (2), correlation id (4).
pub const REQUEST_BYTES_MIN: usize = 8;

/// What [`check_frame`] found at the start of a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameStatus {
    /// A whole frame: the body is `buf[PREFIX_BYTES..PREFIX_BYTES + body_len]`.
    Complete {
        /// The body's length (without the prefix).
        body_len: usize,
    },
    /// Not enough bytes yet; at least `needed` bytes in total are required.
    Incomplete {
        /// Total bytes (prefix included) needed before the frame is whole.
        needed: usize,
    },
}

/// Checks whether `buf` starts with a whole frame whose body is at most `body_bytes_max` bytes.
pub fn check_frame(buf: &[u8], body_bytes_max: usize) -> Result<FrameStatus, KafkaError> {
    let Some(prefix) = buf.get(..PREFIX_BYTES) else {
        return Ok(FrameStatus::Incomplete {
            needed: PREFIX_BYTES,
        });
    };
    let len = i32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
    if len < REQUEST_BYTES_MIN as i32 || len as usize > body_bytes_max {
        return Err(KafkaError::FrameTooLarge {
            len: i64::from(len),
            max: body_bytes_max,
        });
    }
    let body_len = len as usize;
    if buf.len() < PREFIX_BYTES + body_len {
        return Ok(FrameStatus::Incomplete {
            needed: PREFIX_BYTES + body_len,
        });
    }
    Ok(FrameStatus::Complete { body_len })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incomplete_prefix_and_body_are_told_apart_from_invalid() {
        assert_eq!(
            check_frame(&[0, 0], 100).ok(),
            Some(FrameStatus::Incomplete { needed: 4 })
        );
        assert_eq!(
            check_frame(&[0, 0, 0, 10, 1, 2], 100).ok(),
            Some(FrameStatus::Incomplete { needed: 14 })
        );
        let mut whole = vec![0, 0, 0, 8];
        whole.extend_from_slice(&[0; 8]);
        assert_eq!(
            check_frame(&whole, 100).ok(),
            Some(FrameStatus::Complete { body_len: 8 })
        );
    }

    #[test]
    fn oversize_negative_and_tiny_lengths_are_invalid() {
        assert!(matches!(
            check_frame(&[0x7f, 0xff, 0xff, 0xff], 1024),
            Err(KafkaError::FrameTooLarge { .. })
        ));
        assert!(check_frame(&[0xff, 0xff, 0xff, 0xff], 1024).is_err());
        assert!(check_frame(&[0, 0, 0, 3, 0, 0, 0], 1024).is_err());
        // Exactly at the limit is fine.
        assert!(check_frame(&[0, 0, 4, 0], 1024).is_ok());
        assert!(check_frame(&[0, 0, 4, 1], 1024).is_err());
    }
}
