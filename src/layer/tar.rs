//! A tar writer that produces exactly the bytes of Python's `tarfile` in PAX
//! mode, the writer behind nixpkgs' `stream_layered_image.py`: ustar headers,
//! a `././@PaxHeader` record only where a field does not fit, and the archive
//! padded to a 10240-byte record.

use std::io::{self, Read, Write};

const BLOCK: usize = 512;
const RECORD: u64 = 20 * BLOCK as u64;

/// Ownership and time written on every entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Owner {
    pub mtime: u64,
    pub uid: u64,
    pub gid: u64,
    pub uname: String,
    pub gname: String,
}

impl Owner {
    /// Numeric root with empty names, as GNU tar's `--numeric-owner` writes.
    pub fn numeric_root(mtime: u64) -> Owner {
        Owner {
            mtime,
            uid: 0,
            gid: 0,
            uname: String::new(),
            gname: String::new(),
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Regular,
    Symlink,
    Directory,
    PaxHeader,
}

impl Kind {
    fn flag(self) -> u8 {
        match self {
            Kind::Regular => b'0',
            Kind::Symlink => b'2',
            Kind::Directory => b'5',
            Kind::PaxHeader => b'x',
        }
    }
}

/// Streams tar entries into `out`, counting bytes for the final padding.
pub struct TarWriter<W: Write> {
    out: W,
    offset: u64,
    /// Read buffer for file contents, reused for every file.
    buf: Vec<u8>,
}

impl<W: Write> TarWriter<W> {
    pub fn new(out: W) -> Self {
        TarWriter {
            out,
            offset: 0,
            buf: Vec::new(),
        }
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.offset += bytes.len() as u64;
        Ok(())
    }

    /// A directory; a trailing `/` is added to the name as tarfile does.
    pub fn directory(&mut self, name: &[u8], mode: u32, owner: &Owner) -> io::Result<()> {
        let mut name = name.to_vec();
        if !name.ends_with(b"/") {
            name.push(b'/');
        }
        self.header(&name, b"", mode, 0, Kind::Directory, owner)
    }

    pub fn symlink(&mut self, name: &[u8], target: &[u8], owner: &Owner) -> io::Result<()> {
        self.header(name, target, 0o777, 0, Kind::Symlink, owner)
    }

    /// A regular file whose `size` bytes are read from `data`; `on_data` sees
    /// each piece as it passes (for hashing in the same pass).
    pub fn file(
        &mut self,
        name: &[u8],
        mode: u32,
        size: u64,
        owner: &Owner,
        data: &mut dyn Read,
        on_data: &mut dyn FnMut(&[u8]) -> io::Result<()>,
    ) -> io::Result<()> {
        self.header(name, b"", mode, size, Kind::Regular, owner)?;
        let mut buf = std::mem::take(&mut self.buf);
        buf.resize(256 * 1024, 0);
        let mut left = size;
        while left > 0 {
            let want = buf.len().min(left as usize);
            let n = data.read(&mut buf[..want])?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "file shrank while it was being archived",
                ));
            }
            on_data(&buf[..n])?;
            self.write(&buf[..n])?;
            left -= n as u64;
        }
        self.buf = buf;
        self.pad_block()
    }

    fn pad_block(&mut self) -> io::Result<()> {
        let rem = (self.offset % BLOCK as u64) as usize;
        if rem != 0 {
            self.write(&[0u8; BLOCK][..BLOCK - rem])?;
        }
        Ok(())
    }

    /// Two zero blocks, then zeros up to a multiple of the 10240-byte record.
    pub fn finish(mut self) -> io::Result<W> {
        self.write(&[0u8; 2 * BLOCK])?;
        let rem = self.offset % RECORD;
        if rem != 0 {
            let pad = vec![0u8; (RECORD - rem) as usize];
            self.write(&pad)?;
        }
        Ok(self.out)
    }

    fn header(
        &mut self,
        name: &[u8],
        link: &[u8],
        mode: u32,
        size: u64,
        kind: Kind,
        owner: &Owner,
    ) -> io::Result<()> {
        let mut pax: Vec<(&str, Vec<u8>)> = Vec::new();
        for (key, value, limit) in [
            ("path", name, 100),
            ("linkpath", link, 100),
            ("uname", owner.uname.as_bytes(), 32),
            ("gname", owner.gname.as_bytes(), 32),
        ] {
            if !value.is_ascii() || value.len() > limit {
                pax.push((key, value.to_vec()));
            }
        }
        let mut numbers = [
            ("uid", owner.uid, 8usize),
            ("gid", owner.gid, 8),
            ("size", size, 12),
            ("mtime", owner.mtime, 12),
        ];
        for (key, value, digits) in numbers.iter_mut() {
            if *value >= 8u64.pow(*digits as u32 - 1) {
                pax.push((key, value.to_string().into_bytes()));
                *value = 0;
            }
        }
        if !pax.is_empty() {
            let records = pax_records(&pax);
            let block = ustar_block(
                b"././@PaxHeader",
                b"",
                0,
                records.len() as u64,
                Kind::PaxHeader,
                &Owner::numeric_root(0),
            );
            self.write(&block)?;
            self.write(&records)?;
            self.pad_block()?;
        }
        let [uid, gid, size, mtime] = numbers.map(|(_, v, _)| v);
        let owner = Owner {
            mtime,
            uid,
            gid,
            uname: owner.uname.clone(),
            gname: owner.gname.clone(),
        };
        let block = ustar_block(name, link, mode, size, kind, &owner);
        self.write(&block)
    }
}

/// PAX records `"<len> key=value\n"`, where the length counts itself. Values
/// that are not valid UTF-8 need `hdrcharset=BINARY` first, as tarfile writes.
fn pax_records(fields: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    if fields.iter().any(|(_, v)| std::str::from_utf8(v).is_err()) {
        out.extend_from_slice(b"21 hdrcharset=BINARY\n");
    }
    for (key, value) in fields {
        let body = key.len() + value.len() + 3;
        let mut len = body;
        loop {
            let next = body + len.to_string().len();
            if next == len {
                break;
            }
            len = next;
        }
        out.extend_from_slice(len.to_string().as_bytes());
        out.push(b' ');
        out.extend_from_slice(key.as_bytes());
        out.push(b'=');
        out.extend_from_slice(value);
        out.push(b'\n');
    }
    out
}

/// A field as tarfile's `stn` with ASCII and `replace`: every character that is
/// not ASCII becomes one `?` (bytes that are not UTF-8 count one each), then
/// the result is cut or NUL-padded to `len`.
fn put_str(block: &mut [u8], at: usize, len: usize, value: &[u8]) {
    let mut ascii = Vec::with_capacity(value.len());
    for chunk in value.utf8_chunks() {
        for c in chunk.valid().chars() {
            ascii.push(if c.is_ascii() { c as u8 } else { b'?' });
        }
        ascii.extend(std::iter::repeat_n(b'?', chunk.invalid().len()));
    }
    let n = ascii.len().min(len);
    block[at..at + n].copy_from_slice(&ascii[..n]);
}

/// A number as `digits − 1` octal digits and a NUL.
fn put_octal(block: &mut [u8], at: usize, digits: usize, value: u64) {
    let text = format!("{:0width$o}", value, width = digits - 1);
    block[at..at + digits - 1].copy_from_slice(text.as_bytes());
    block[at + digits - 1] = 0;
}

fn ustar_block(
    name: &[u8],
    link: &[u8],
    mode: u32,
    size: u64,
    kind: Kind,
    owner: &Owner,
) -> [u8; BLOCK] {
    let mut b = [0u8; BLOCK];
    put_str(&mut b, 0, 100, name);
    put_octal(&mut b, 100, 8, u64::from(mode & 0o7777));
    put_octal(&mut b, 108, 8, owner.uid);
    put_octal(&mut b, 116, 8, owner.gid);
    put_octal(&mut b, 124, 12, size);
    put_octal(&mut b, 136, 12, owner.mtime);
    b[148..156].copy_from_slice(b"        ");
    b[156] = kind.flag();
    put_str(&mut b, 157, 100, link);
    b[257..265].copy_from_slice(b"ustar\x0000");
    put_str(&mut b, 265, 32, owner.uname.as_bytes());
    put_str(&mut b, 297, 32, owner.gname.as_bytes());
    // devmajor, devminor and prefix stay NUL, as tarfile leaves them for files.
    let checksum: u32 = b.iter().map(|&x| u32::from(x)).sum();
    let text = format!("{checksum:06o}\0");
    b[148..155].copy_from_slice(text.as_bytes());
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_length_counts_itself() {
        let r = pax_records(&[("path", vec![b'a'; 95])]);
        let text = String::from_utf8(r.clone()).unwrap();
        let (len, _) = text.split_once(' ').unwrap();
        assert_eq!(len.parse::<usize>().unwrap(), r.len());
    }

    #[test]
    fn archive_is_padded_to_a_record() {
        let mut t = TarWriter::new(Vec::new());
        t.directory(b"/nix", 0o755, &Owner::numeric_root(1))
            .unwrap();
        let out = t.finish().unwrap();
        assert_eq!(out.len(), 10240);
        assert_eq!(&out[0..5], b"/nix/");
        assert_eq!(&out[257..265], b"ustar\x0000");
    }

    #[test]
    fn non_ascii_names_get_a_pax_record_and_question_marks() {
        let mut t = TarWriter::new(Vec::new());
        let name = "/nix/store/x/caf\u{e9}".as_bytes();
        t.file(
            name,
            0o444,
            0,
            &Owner::numeric_root(1),
            &mut io::empty(),
            &mut |_| Ok(()),
        )
        .unwrap();
        let out = t.finish().unwrap();
        assert_eq!(&out[0..14], b"././@PaxHeader");
        assert_eq!(out[156], b'x');
        assert_eq!(&out[1024..1041], b"/nix/store/x/caf?");
    }
}
