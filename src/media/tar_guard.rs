//! A guard in front of the `tar` crate for untrusted archives (layers of
//! images read by `check`, `fromImage` and push, verify's tarballs): the
//! crate reads PAX and GNU long-name records whole into memory, so a 3 MB
//! gzip layer can make it allocate gigabytes. The guard follows the stream's
//! headers as they pass and fails on any such record over `MAX_EXTENSION`,
//! keeping memory bounded whatever the archive says.

use std::io::{self, Read};

/// The largest PAX or long-name record accepted (real ones are tiny).
pub const MAX_EXTENSION: u64 = 1 << 20;
const BLOCK: usize = 512;

/// A reader that passes a tar stream through unchanged, checking its headers.
pub struct TarGuard<R: Read> {
    inner: R,
    header: [u8; BLOCK],
    /// Bytes of `header` already handed out; `BLOCK` when none is pending.
    header_sent: usize,
    /// Data bytes (padded to blocks) of the current member still to pass.
    data_left: u64,
    /// A PAX record's `size=` applies to the next member.
    pax: Option<Vec<u8>>,
    size_override: Option<u64>,
}

impl<R: Read> TarGuard<R> {
    pub fn new(inner: R) -> Self {
        TarGuard {
            inner,
            header: [0; BLOCK],
            header_sent: BLOCK,
            data_left: 0,
            pax: None,
            size_override: None,
        }
    }

    /// Reads the next header block; `Ok(false)` at the end of the stream.
    fn next_header(&mut self) -> io::Result<bool> {
        let mut filled = 0;
        while filled < BLOCK {
            let n = self.inner.read(&mut self.header[filled..])?;
            if n == 0 {
                return if filled == 0 {
                    Ok(false)
                } else {
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "truncated tar header",
                    ))
                };
            }
            filled += n;
        }
        self.header_sent = 0;
        if self.header.iter().all(|&b| b == 0) {
            return Ok(true); // end-of-archive blocks
        }
        let typeflag = self.header[156];
        let mut size = parse_size(&self.header[124..136])?;
        let extension = matches!(typeflag, b'x' | b'g' | b'L' | b'K');
        if extension {
            if size > MAX_EXTENSION {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("tar extension record of {size} bytes (at most {MAX_EXTENSION})"),
                ));
            }
            if typeflag == b'x' {
                self.pax = Some(Vec::with_capacity(size as usize));
            }
        } else if let Some(real) = self.size_override.take() {
            size = real;
        }
        // Links, directories and devices carry no data whatever `size` says.
        if matches!(typeflag, b'1' | b'2' | b'3' | b'4' | b'5' | b'6') {
            size = 0;
        }
        self.data_left = size.div_ceil(BLOCK as u64) * BLOCK as u64;
        Ok(true)
    }
}

/// A ustar numeric field: octal text, or GNU base-256 (high bit set).
fn parse_size(field: &[u8]) -> io::Result<u64> {
    if field[0] & 0x80 != 0 {
        let mut value: u64 = 0;
        for (i, &b) in field.iter().enumerate() {
            let b = if i == 0 { b & 0x7f } else { b };
            value = value
                .checked_mul(256)
                .and_then(|v| v.checked_add(u64::from(b)))
                .ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidData, "tar size out of range")
                })?;
        }
        return Ok(value);
    }
    let text: String = field
        .iter()
        .take_while(|&&b| b != 0)
        .map(|&b| b as char)
        .collect();
    let text = text.trim();
    if text.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(text, 8)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, format!("bad tar size `{text}`")))
}

/// The `size` record of a PAX header, if any.
fn pax_size(records: &[u8]) -> Option<u64> {
    let mut rest = records;
    while !rest.is_empty() {
        let space = rest.iter().position(|&b| b == b' ')?;
        let len: usize = std::str::from_utf8(&rest[..space]).ok()?.parse().ok()?;
        // The length counts itself, the space and the record.
        if len <= space + 1 || len > rest.len() {
            return None;
        }
        let record = &rest[space + 1..len];
        if let Some(value) = record.strip_prefix(b"size=") {
            let value = value.strip_suffix(b"\n").unwrap_or(value);
            return std::str::from_utf8(value).ok()?.parse().ok();
        }
        rest = &rest[len..];
    }
    None
}

impl<R: Read> Read for TarGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.header_sent == BLOCK && self.data_left == 0 && !self.next_header()? {
            return Ok(0);
        }
        if self.header_sent < BLOCK {
            let n = buf.len().min(BLOCK - self.header_sent);
            buf[..n].copy_from_slice(&self.header[self.header_sent..self.header_sent + n]);
            self.header_sent += n;
            return Ok(n);
        }
        let want = buf
            .len()
            .min(usize::try_from(self.data_left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "truncated tar member",
            ));
        }
        self.data_left -= n as u64;
        if let Some(pax) = &mut self.pax {
            pax.extend_from_slice(&buf[..n]);
            if self.data_left == 0 {
                self.size_override = pax_size(pax);
                self.pax = None;
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = tar::Builder::new(Vec::new());
        for (name, data) in members {
            let mut h = tar::Header::new_ustar();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            out.append_data(&mut h, name, *data).unwrap();
        }
        out.into_inner().unwrap()
    }

    #[test]
    fn passes_archives_through_unchanged() {
        let long = "d/".repeat(80) + "file"; // a GNU long name record
        let bytes = archive(&[("a", b"hello"), (&long, &[7u8; 3000]), ("empty", b"")]);
        let mut through = Vec::new();
        TarGuard::new(&bytes[..]).read_to_end(&mut through).unwrap();
        assert_eq!(through, bytes);
        let names: Vec<String> = tar::Archive::new(TarGuard::new(&bytes[..]))
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        assert_eq!(names, ["a", long.as_str(), "empty"]);
    }

    #[test]
    fn refuses_a_huge_extension_record_of_every_kind() {
        // PAX (x, g) and GNU long name and long link (L, K) records.
        for kind in [b'x', b'g', b'L', b'K'] {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::new(kind));
            h.set_size(3 << 30);
            h.set_cksum();
            let mut bytes = h.as_bytes().to_vec();
            bytes.extend_from_slice(&[b'x'; 4096]);
            let mut through = Vec::new();
            let err = TarGuard::new(&bytes[..])
                .read_to_end(&mut through)
                .unwrap_err();
            assert!(
                err.to_string().contains("extension record"),
                "{}: {err}",
                kind as char
            );
        }
    }

    /// A PAX `size=` record gives the next member's real size (its header
    /// may say 0): the guard must follow it, or it reads data as headers.
    #[test]
    fn follows_a_pax_size_record() {
        let records = b"12 size=600\n";
        let mut out = Vec::new();
        let mut pax = tar::Header::new_ustar();
        pax.set_entry_type(tar::EntryType::XHeader);
        pax.set_size(records.len() as u64);
        pax.set_cksum();
        out.extend_from_slice(pax.as_bytes());
        out.extend_from_slice(records);
        out.resize(1024, 0);
        let mut big = tar::Header::new_ustar();
        big.set_path("big").unwrap();
        big.set_size(0);
        big.set_mode(0o644);
        big.set_cksum();
        out.extend_from_slice(big.as_bytes());
        out.extend_from_slice(&[b'A'; 600]);
        out.resize(out.len() + 424, 0);
        out.extend_from_slice(&archive(&[("next", b"hello")]));
        let mut through = Vec::new();
        TarGuard::new(&out[..]).read_to_end(&mut through).unwrap();
        assert_eq!(through, out);
        let mut archive = tar::Archive::new(TarGuard::new(&out[..]));
        let members: Vec<(String, usize)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let mut e = e.unwrap();
                let name = e.path().unwrap().display().to_string();
                let mut data = Vec::new();
                e.read_to_end(&mut data).unwrap();
                (name, data.len())
            })
            .collect();
        assert_eq!(members, [("big".to_string(), 600), ("next".to_string(), 5)]);
    }

    #[test]
    fn pax_size_records() {
        assert_eq!(
            pax_size(b"16 size=1234567\n20 path=some/file\n"),
            Some(1_234_567)
        );
        assert_eq!(pax_size(b"20 path=some/file\n"), None);
        assert_eq!(pax_size(b"99 size=1\n"), None);
        // A length shorter than its own digits (found by the fuzzer).
        assert_eq!(pax_size(b"1 size=5\n"), None);
        assert_eq!(pax_size(b"00000 "), None);
    }
}
