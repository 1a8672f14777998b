//! Record payloads: a cheap pool of pseudo-random printable bytes, and the
//! 16-byte header that `e2e` puts at the front of every payload.

/// Bytes of slack after the payload size, so consecutive records start at
/// different offsets of the pool and are not byte-identical.
const POOL_SLACK: usize = 4096;

/// A buffer of pseudo-random printable bytes from which payloads are sliced.
///
/// The content looks like base64 text (64 distinct byte values), so it
/// compresses a little, as real data usually does, instead of being either
/// incompressible noise or a trivially compressible run of zeros.
pub struct PayloadPool {
    bytes: Vec<u8>,
    size: usize,
}

impl PayloadPool {
    /// Creates a pool serving payloads of `size` bytes.
    pub fn new(size: usize) -> Self {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let bytes = (0..size + POOL_SLACK)
            .map(|_| {
                // xorshift64: fast and good enough for filler bytes.
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                ALPHABET[(state >> 58) as usize]
            })
            .collect();
        Self { bytes, size }
    }

    /// Payload of the `index`-th record: `size` bytes starting at an offset
    /// that varies with `index`.
    pub fn get(&self, index: u64) -> &[u8] {
        let offset = (index.wrapping_mul(61) % POOL_SLACK as u64) as usize;
        &self.bytes[offset..offset + self.size]
    }

    /// Payload size in bytes.
    pub fn size(&self) -> usize {
        self.size
    }
}

/// Length of the e2e header: send time (8 bytes) and run id (8 bytes).
pub const HEADER_LEN: usize = 16;

/// Writes the e2e header (send time in nanoseconds since the run's base
/// instant, then the run id, both little-endian) into the first 16 bytes.
pub fn write_header(buf: &mut [u8], send_ns: u64, run_id: u64) {
    buf[..8].copy_from_slice(&send_ns.to_le_bytes());
    buf[8..HEADER_LEN].copy_from_slice(&run_id.to_le_bytes());
}

/// Reads the send time from an e2e payload, if the payload belongs to the
/// run `run_id`; records of other runs or other producers give `None`.
pub fn read_header(payload: &[u8], run_id: u64) -> Option<u64> {
    let header = payload.get(..HEADER_LEN)?;
    let (ts, id) = header.split_at(8);
    let id = u64::from_le_bytes(id.try_into().ok()?);
    if id != run_id {
        return None;
    }
    Some(u64::from_le_bytes(ts.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_serves_payloads_of_the_requested_size() {
        let pool = PayloadPool::new(100);
        assert_eq!(pool.size(), 100);
        for i in [0, 1, 2, 67, 1_000_003, u64::MAX] {
            assert_eq!(pool.get(i).len(), 100);
        }
        assert_ne!(pool.get(0), pool.get(1));
        assert!(pool.get(5).iter().all(|b| b.is_ascii_graphic()));
    }

    #[test]
    fn header_round_trip() {
        let mut buf = vec![0u8; 32];
        write_header(&mut buf, 123_456_789, 42);
        assert_eq!(read_header(&buf, 42), Some(123_456_789));
        assert_eq!(read_header(&buf, 43), None);
        assert_eq!(read_header(&buf[..15], 42), None);
    }
}
