//! What every generated media payload carries, so the sink can check
//! integrity and measure one-way latency: magic, stream number, send time,
//! and a checksum of the rest of the payload (a fixed filler pattern, whose
//! checksum per length is computed once, so a sender writes 20 bytes a packet).
//! An audio payload starts with it; an H.264 slice packet has it after its two
//! header bytes ([`h264::PROBE_AT`]); H.264 parameter-set packets have none.

use super::h264;

/// Bytes of the probe.
pub const LEN: usize = 20;
const MAGIC: [u8; 4] = *b"RRPB";

/// A probe read back from a payload.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    /// The generator's stream number.
    pub stream: u32,
    /// Send time, nanoseconds since the Unix epoch.
    pub sent_ns: u64,
}

/// Why a payload fails the check.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ProbeError {
    /// Too short or no magic: not from the generator.
    Foreign,
    /// The checksum does not match the bytes: corrupted on the way.
    Corrupt,
}

/// The filler of every payload after the probe.
fn filler() -> &'static [u8] {
    static FILLER: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    FILLER.get_or_init(|| {
        (0..65536u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect()
    })
}

/// Payload lengths whose filler checksum is kept in a table (larger than any
/// generated packet).
const TABLE: usize = 2048;

/// The checksum of the filler after the probe of a `payload_len`-byte payload.
fn filler_crc(payload_len: usize) -> u32 {
    static CRCS: std::sync::OnceLock<Vec<u32>> = std::sync::OnceLock::new();
    let rest = payload_len.saturating_sub(LEN);
    if rest >= TABLE {
        return crc32fast::hash(&filler()[..rest]);
    }
    CRCS.get_or_init(|| {
        // One pass over the filler: the checksum of every prefix.
        let mut h = crc32fast::Hasher::new();
        let mut crcs = Vec::with_capacity(TABLE);
        for &b in &filler()[..TABLE] {
            crcs.push(h.clone().finalize());
            h.update(&[b]);
        }
        crcs
    })[rest]
}

/// Writes the filler into `payload` after the probe's place. A buffer filled
/// once serves every shorter payload: the filler does not depend on length.
pub fn fill(payload: &mut [u8]) {
    if let Some(rest) = payload.get_mut(LEN..) {
        rest.copy_from_slice(&filler()[..rest.len()]);
    }
}

/// Writes the probe into `payload` (at least [`LEN`] bytes) whose filler
/// [`fill`] has written: 20 bytes, whatever the payload's length.
pub fn stamp(payload: &mut [u8], stream: u32, sent_ns: u64) {
    let crc = filler_crc(payload.len());
    let head = &mut payload[..LEN];
    head[..4].copy_from_slice(&MAGIC);
    head[4..8].copy_from_slice(&stream.to_be_bytes());
    head[8..16].copy_from_slice(&sent_ns.to_be_bytes());
    head[16..20].copy_from_slice(&crc.to_be_bytes());
}

/// Rewrites the send time of a datagram's probe, if it carries one: at
/// `offset` (where its payload starts) or [`h264::PROBE_AT`] bytes further.
/// Senders stamp as the datagram leaves, not as it is made. The checksum
/// covers the filler only, so it stays valid.
pub fn restamp(datagram: &mut [u8], offset: usize, sent_ns: u64) {
    // An H.264 payload never has the magic at `offset`: its first byte
    // would be 'R', NAL unit type 18, which is reserved.
    for at in [offset, offset + h264::PROBE_AT] {
        if let Some(head) = datagram.get_mut(at..at + LEN)
            && head[..4] == MAGIC
        {
            head[8..16].copy_from_slice(&sent_ns.to_be_bytes());
            return;
        }
    }
}

/// Writes the filler and the probe into `payload` (at least [`LEN`] bytes).
pub fn write(payload: &mut [u8], stream: u32, sent_ns: u64) {
    fill(payload);
    stamp(payload, stream, sent_ns);
}

/// Reads and checks the probe of `payload`.
pub fn read(payload: &[u8]) -> Result<Probe, ProbeError> {
    if payload.len() < LEN || payload[..4] != MAGIC {
        return Err(ProbeError::Foreign);
    }
    let crc = u32::from_be_bytes(payload[16..20].try_into().expect("4 bytes"));
    if crc32fast::hash(&payload[LEN..]) != crc {
        return Err(ProbeError::Corrupt);
    }
    Ok(Probe {
        stream: u32::from_be_bytes(payload[4..8].try_into().expect("4 bytes")),
        sent_ns: u64::from_be_bytes(payload[8..16].try_into().expect("8 bytes")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corruption() {
        let mut p = vec![0u8; 300];
        write(&mut p, 7, 123_456_789);
        assert_eq!(
            read(&p),
            Ok(Probe {
                stream: 7,
                sent_ns: 123_456_789
            })
        );
        p[200] ^= 1;
        assert_eq!(read(&p), Err(ProbeError::Corrupt));
        assert_eq!(read(&[0; 10]), Err(ProbeError::Foreign));
    }

    #[test]
    fn restamping_changes_the_time_and_nothing_else() {
        let mut d = vec![0xeeu8; 12 + 100];
        write(&mut d[12..], 5, 1);
        restamp(&mut d, 12, 777);
        assert_eq!(
            read(&d[12..]),
            Ok(Probe {
                stream: 5,
                sent_ns: 777
            })
        );
        assert_eq!(d[..12], [0xee; 12]);
        // After an H.264 slice's two header bytes.
        let mut v = vec![0xeeu8; 12 + 100];
        v[12..14].copy_from_slice(&[0x41, 0x9a]);
        write(&mut v[14..], 6, 1);
        restamp(&mut v, 12, 888);
        assert_eq!(
            read(&v[14..]),
            Ok(Probe {
                stream: 6,
                sent_ns: 888
            })
        );
        assert_eq!(v[..12], [0xee; 12]);
        assert_eq!(v[12..14], [0x41, 0x9a]);
        // Not a probe (an RTCP report, say), or too short: left alone.
        let mut sr = [0x80u8; 28];
        restamp(&mut sr, 12, 777);
        assert_eq!(sr, [0x80; 28]);
        let mut short = [0u8; 20];
        restamp(&mut short, 12, 777);
        assert_eq!(short, [0; 20]);
    }

    #[test]
    fn a_buffer_filled_once_stamps_every_length_and_the_table_ends_right() {
        let mut buf = vec![0u8; TABLE + 100];
        fill(&mut buf);
        for len in [
            LEN,
            LEN + 1,
            100,
            1188,
            TABLE + LEN - 1,
            TABLE + LEN,
            TABLE + 100,
        ] {
            stamp(&mut buf[..len], 3, 9);
            assert_eq!(
                read(&buf[..len]),
                Ok(Probe {
                    stream: 3,
                    sent_ns: 9
                }),
                "{len}"
            );
        }
    }
}
