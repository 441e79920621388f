//! What every generated RTP payload starts with, so the sink can check
//! integrity and measure one-way latency: magic, stream number, send time,
//! and a checksum of the rest of the payload (a fixed filler pattern, whose
//! checksum per length is computed once).

/// Bytes of the probe at the start of each payload.
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

/// Writes probes; remembers the filler's checksum for each payload length.
#[derive(Clone, Debug, Default)]
pub struct Writer {
    crc: Vec<Option<u32>>,
}

impl Writer {
    /// Writes a probe and the filler into `payload` (at least [`LEN`] bytes).
    pub fn write(&mut self, payload: &mut [u8], stream: u32, sent_ns: u64) {
        let (head, rest) = payload.split_at_mut(LEN);
        let filler = &filler()[..rest.len()];
        rest.copy_from_slice(filler);
        if self.crc.len() <= rest.len() {
            self.crc.resize(rest.len() + 1, None);
        }
        let crc = *self.crc[rest.len()].get_or_insert_with(|| crc32fast::hash(filler));
        head[..4].copy_from_slice(&MAGIC);
        head[4..8].copy_from_slice(&stream.to_be_bytes());
        head[8..16].copy_from_slice(&sent_ns.to_be_bytes());
        head[16..20].copy_from_slice(&crc.to_be_bytes());
    }
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
        Writer::default().write(&mut p, 7, 123_456_789);
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
}
