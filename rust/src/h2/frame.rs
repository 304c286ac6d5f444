//! HTTP/2 frames (RFC 9113 §4, §6): the 9-byte header, the frames this server writes, and the
//! error codes.

use bytes::{BufMut, BytesMut};

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
pub const HEADER_LEN: usize = 9;

pub const DATA: u8 = 0;
pub const HEADERS: u8 = 1;
pub const PRIORITY: u8 = 2;
pub const RST_STREAM: u8 = 3;
pub const SETTINGS: u8 = 4;
pub const PUSH_PROMISE: u8 = 5;
pub const PING: u8 = 6;
pub const GOAWAY: u8 = 7;
pub const WINDOW_UPDATE: u8 = 8;
pub const CONTINUATION: u8 = 9;

pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;
pub const PADDED: u8 = 0x8;
pub const PRIORITY_FLAG: u8 = 0x20;

pub const SETTINGS_HEADER_TABLE_SIZE: u16 = 0x1;
pub const SETTINGS_ENABLE_PUSH: u16 = 0x2;
pub const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
pub const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;
pub const SETTINGS_MAX_FRAME_SIZE: u16 = 0x5;
pub const SETTINGS_MAX_HEADER_LIST_SIZE: u16 = 0x6;

/// The largest flow-control window (2^31 - 1).
pub const MAX_WINDOW: i64 = (1 << 31) - 1;
/// The window every stream and the connection start with (RFC 9113 §6.9.2).
pub const DEFAULT_WINDOW: i64 = 65_535;
pub const DEFAULT_MAX_FRAME: usize = 16_384;
pub const MAX_MAX_FRAME: usize = (1 << 24) - 1;

/// Error codes (RFC 9113 §7).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Reason {
    NoError = 0x0,
    Protocol = 0x1,
    Internal = 0x2,
    FlowControl = 0x3,
    StreamClosed = 0x5,
    FrameSize = 0x6,
    RefusedStream = 0x7,
    Cancel = 0x8,
    Compression = 0x9,
}

/// A frame's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub len: usize,
    pub kind: u8,
    pub flags: u8,
    pub stream: u32,
}

impl Head {
    /// The header at the start of `b` (at least 9 bytes); the reserved bit is ignored.
    pub fn parse(b: &[u8]) -> Head {
        Head {
            len: usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2]),
            kind: b[3],
            flags: b[4],
            stream: u32::from_be_bytes([b[5], b[6], b[7], b[8]]) & 0x7fff_ffff,
        }
    }

    /// The nine bytes made on the stack and appended at once (one capacity check, not four).
    pub fn write(&self, dst: &mut BytesMut) {
        let len = u32::try_from(self.len).expect("frame length fits 24 bits");
        let [_, l0, l1, l2] = len.to_be_bytes();
        let [s0, s1, s2, s3] = self.stream.to_be_bytes();
        dst.extend_from_slice(&[l0, l1, l2, self.kind, self.flags, s0, s1, s2, s3]);
    }

    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }
}

pub fn head(dst: &mut BytesMut, len: usize, kind: u8, flags: u8, stream: u32) {
    Head {
        len,
        kind,
        flags,
        stream,
    }
    .write(dst);
}

pub fn settings(dst: &mut BytesMut, values: &[(u16, u32)]) {
    head(dst, values.len() * 6, SETTINGS, 0, 0);
    for &(id, v) in values {
        dst.put_u16(id);
        dst.put_u32(v);
    }
}

pub fn settings_ack(dst: &mut BytesMut) {
    head(dst, 0, SETTINGS, ACK, 0);
}

pub fn ping_ack(dst: &mut BytesMut, payload: &[u8]) {
    head(dst, 8, PING, ACK, 0);
    dst.put_slice(payload);
}

pub fn window_update(dst: &mut BytesMut, stream: u32, increment: u32) {
    head(dst, 4, WINDOW_UPDATE, 0, stream);
    dst.put_u32(increment);
}

pub fn rst_stream(dst: &mut BytesMut, stream: u32, reason: Reason) {
    head(dst, 4, RST_STREAM, 0, stream);
    dst.put_u32(reason as u32);
}

pub fn goaway(dst: &mut BytesMut, last: u32, reason: Reason) {
    head(dst, 8, GOAWAY, 0, 0);
    dst.put_u32(last);
    dst.put_u32(reason as u32);
}

/// Removes the padding of a PADDED frame's payload: `None` when the pad length is not less
/// than the payload (PROTOCOL_ERROR). `extra` bytes (priority fields) follow the pad length.
pub fn unpad(payload: &[u8], padded: bool) -> Option<(usize, usize)> {
    if !padded {
        return Some((0, payload.len()));
    }
    let pad = usize::from(*payload.first()?);
    let end = payload.len().checked_sub(pad)?;
    (end >= 1).then_some((1, end))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads_round_trip() {
        let mut b = BytesMut::new();
        let h = Head {
            len: 0x01_02_03,
            kind: HEADERS,
            flags: END_HEADERS | END_STREAM,
            stream: 0x7fff_ffff,
        };
        h.write(&mut b);
        assert_eq!(b.len(), HEADER_LEN);
        assert_eq!(Head::parse(&b), h);
        // The reserved bit is ignored on receipt.
        b[5] |= 0x80;
        assert_eq!(Head::parse(&b).stream, 0x7fff_ffff);
    }

    #[test]
    fn padding_is_removed_or_refused() {
        assert_eq!(unpad(b"abc", false), Some((0, 3)));
        assert_eq!(unpad(b"\x02abcd", true), Some((1, 3)));
        assert_eq!(unpad(b"\x00", true), Some((1, 1)));
        assert_eq!(unpad(b"\x04abc", true), None);
        assert_eq!(unpad(b"\x03abc", true), Some((1, 1)));
        assert_eq!(unpad(b"", true), None);
    }

    #[test]
    fn control_frames_are_laid_out_as_the_rfc_says() {
        let mut b = BytesMut::new();
        goaway(&mut b, 7, Reason::Protocol);
        assert_eq!(&b[..], &[0, 0, 8, GOAWAY, 0, 0, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 1]);
        b.clear();
        window_update(&mut b, 3, 1000);
        assert_eq!(&b[..], &[0, 0, 4, WINDOW_UPDATE, 0, 0, 0, 0, 3, 0, 0, 0x03, 0xe8]);
        b.clear();
        settings(&mut b, &[(SETTINGS_MAX_CONCURRENT_STREAMS, 100)]);
        assert_eq!(&b[..], &[0, 0, 6, SETTINGS, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100]);
    }
}
