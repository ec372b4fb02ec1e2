//! The tar state machine: header blocks are assembled in a 512-byte buffer,
//! extension data (GNU long names, pax records) is collected up to a limit,
//! and member data is skipped by counting.

use super::header::{self, Header, BLOCK, GNU_EXT_ISEXTENDED};
use super::pax::{self, PaxRecords};
use super::{padded, EntryKind, TarError, TarEvent, TarMember};

/// Bounds on what the parser holds in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TarLimits {
    /// Largest GNU long name/link or pax extended header data accepted.
    /// Real ones are a few hundred bytes; pax headers carrying extended
    /// attributes or sparse maps can be larger, hence 8 MiB by default.
    pub max_extension_bytes: u64,
}

impl Default for TarLimits {
    fn default() -> Self {
        TarLimits { max_extension_bytes: 8 << 20 }
    }
}

/// Extension headers read so far for the next member.
#[derive(Debug, Default)]
struct Pending {
    /// Offset of the first of them.
    start: Option<u64>,
    long_name: Option<Vec<u8>>,
    long_link: Option<Vec<u8>>,
    pax: PaxRecords,
}

#[derive(Debug)]
enum State {
    /// Assembling a header block.
    Header,
    /// Collecting the data of an extension header, then skipping its
    /// padding.
    Extension { typeflag: u8, data_offset: u64, left: u64, pad: u64, data: Vec<u8> },
    /// GNU old sparse extension blocks follow the member's header.
    SparseExt(Box<TarMember>),
    /// Skipping member data and padding.
    Skip { left: u64 },
    /// One zero block seen at this offset; a second one ends the archive.
    OneZero { at: u64 },
    /// After the end-of-archive marker.
    End,
}

/// A push parser for tar streams; see the [module docs](super).
#[derive(Debug)]
pub struct TarParser {
    limits: TarLimits,
    /// Stream offset of the next byte fed.
    offset: u64,
    block: Box<[u8; BLOCK]>,
    filled: usize,
    state: State,
    pending: Pending,
    global: PaxRecords,
    trailing: u64,
    failed: Option<TarError>,
}

impl Default for TarParser {
    fn default() -> Self {
        Self::new()
    }
}

impl TarParser {
    /// A parser with default limits.
    pub fn new() -> Self {
        Self::with_limits(TarLimits::default())
    }

    /// A parser with explicit limits.
    pub fn with_limits(limits: TarLimits) -> Self {
        TarParser {
            limits,
            offset: 0,
            block: Box::new([0; BLOCK]),
            filled: 0,
            state: State::Header,
            pending: Pending::default(),
            global: PaxRecords::default(),
            trailing: 0,
            failed: None,
        }
    }

    /// Bytes fed so far; the stream offset of the next byte.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Bytes fed after the end-of-archive marker (tar pads archives to
    /// whole records of 10240 bytes by default).
    pub fn trailing_bytes(&self) -> u64 {
        self.trailing
    }

    /// Whether the end-of-archive marker has been seen.
    pub fn is_done(&self) -> bool {
        matches!(self.state, State::End)
    }

    /// Consumes the next bytes of the stream and returns the events they
    /// complete, in stream order.
    ///
    /// # Errors
    /// The first problem found; the parser then stays failed.
    pub fn feed(&mut self, mut data: &[u8]) -> Result<Vec<TarEvent>, TarError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let mut events = Vec::new();
        while !data.is_empty() {
            if let Err(e) = self.step(&mut data, &mut events) {
                self.failed = Some(e.clone());
                return Err(e);
            }
        }
        Ok(events)
    }

    /// Declares the end of the stream.
    ///
    /// # Errors
    /// The error `feed` returned, or [`TarError::Truncated`] unless the
    /// end-of-archive marker (two zero blocks) was seen.
    pub fn finish(&self) -> Result<(), TarError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let expected = match self.state {
            State::End => return Ok(()),
            State::Header if self.pending.start.is_some() => "the member after an extension header",
            State::Header => "a header or the end-of-archive marker",
            State::Extension { .. } => "the rest of an extension header",
            State::SparseExt(_) => "a sparse extension block",
            State::Skip { .. } => "the rest of a member's data",
            State::OneZero { .. } => "the second zero block of the end-of-archive marker",
        };
        Err(TarError::Truncated { offset: self.offset, expected })
    }

    /// Takes up to `n` bytes from `data`.
    fn take<'a>(&mut self, data: &mut &'a [u8], n: u64) -> &'a [u8] {
        let k = n.min(data.len() as u64) as usize;
        let (head, rest) = data.split_at(k);
        *data = rest;
        self.offset += k as u64;
        head
    }

    fn step(&mut self, data: &mut &[u8], events: &mut Vec<TarEvent>) -> Result<(), TarError> {
        match &mut self.state {
            State::Skip { left } => {
                let mut left = *left;
                left -= self.take(data, left).len() as u64;
                self.state = if left == 0 { State::Header } else { State::Skip { left } };
            }
            State::End => {
                let n = data.len() as u64;
                self.take(data, n);
                self.trailing += n;
            }
            State::Extension { .. } => self.step_extension(data)?,
            State::Header | State::OneZero { .. } | State::SparseExt(_) => {
                let need = (BLOCK - self.filled) as u64;
                let got = self.take(data, need);
                self.block[self.filled..self.filled + got.len()].copy_from_slice(got);
                self.filled += got.len();
                if self.filled == BLOCK {
                    self.filled = 0;
                    self.on_block(self.offset - BLOCK as u64, events)?;
                }
            }
        }
        Ok(())
    }

    fn step_extension(&mut self, data: &mut &[u8]) -> Result<(), TarError> {
        let State::Extension { typeflag, data_offset, left, pad, data: mut buf } =
            std::mem::replace(&mut self.state, State::Header)
        else {
            return Ok(());
        };
        let (mut left, mut pad) = (left, pad);
        if left > 0 {
            let got = self.take(data, left);
            buf.extend_from_slice(got);
            left -= got.len() as u64;
        }
        if left == 0 && pad > 0 {
            pad -= self.take(data, pad).len() as u64;
        }
        if left > 0 || pad > 0 {
            self.state = State::Extension { typeflag, data_offset, left, pad, data: buf };
            return Ok(());
        }
        match typeflag {
            b'L' | b'K' => {
                // The name is NUL-terminated inside its data.
                let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
                buf.truncate(end);
                if typeflag == b'L' {
                    self.pending.long_name = Some(buf);
                } else {
                    self.pending.long_link = Some(buf);
                }
            }
            b'g' => {
                let records = PaxRecords::parse(&buf, data_offset)?;
                self.global.merge(records);
            }
            _ => {
                let records = PaxRecords::parse(&buf, data_offset)?;
                self.pending.pax.merge(records);
            }
        }
        Ok(())
    }

    fn on_block(&mut self, at: u64, events: &mut Vec<TarEvent>) -> Result<(), TarError> {
        match std::mem::replace(&mut self.state, State::Header) {
            State::OneZero { at: first } => {
                if !header::is_zero(&self.block) {
                    return Err(TarError::LoneZeroBlock { offset: first });
                }
                events.push(TarEvent::End { offset: first });
                self.state = State::End;
            }
            State::SparseExt(mut member) => {
                // Extension blocks carry sparse map entries and no checksum.
                if self.block[GNU_EXT_ISEXTENDED] != 0 {
                    self.state = State::SparseExt(member);
                } else {
                    member.data_start = at + BLOCK as u64;
                    self.emit(*member, events);
                }
            }
            _ => self.on_header(at, events)?,
        }
        Ok(())
    }

    fn on_header(&mut self, at: u64, events: &mut Vec<TarEvent>) -> Result<(), TarError> {
        if header::is_zero(&self.block) {
            if self.pending.start.is_some() {
                return Err(TarError::DanglingExtension { offset: at });
            }
            self.state = State::OneZero { at };
            return Ok(());
        }
        header::check_checksum(&self.block, at)?;
        let h = header::parse(&self.block, at)?;
        if matches!(h.typeflag, b'L' | b'K' | b'x' | b'X' | b'g') {
            if h.typeflag != b'g' {
                self.pending.start.get_or_insert(at);
            }
            if h.size > self.limits.max_extension_bytes {
                return Err(TarError::ExtensionTooLarge {
                    offset: at,
                    size: h.size,
                    limit: self.limits.max_extension_bytes,
                });
            }
            self.state = State::Extension {
                typeflag: if h.typeflag == b'X' { b'x' } else { h.typeflag },
                data_offset: at + BLOCK as u64,
                left: h.size,
                pad: padded(h.size) - h.size,
                data: Vec::with_capacity(h.size as usize),
            };
            return Ok(());
        }
        let member = self.member(h.clone(), at)?;
        if h.sparse_extended {
            self.state = State::SparseExt(Box::new(member));
        } else {
            self.emit(member, events);
        }
        Ok(())
    }

    /// Reports a member and starts skipping its data.
    fn emit(&mut self, member: TarMember, events: &mut Vec<TarEvent>) {
        let left = padded(member.data_len);
        self.state = if left == 0 { State::Header } else { State::Skip { left } };
        events.push(TarEvent::Member(member));
    }

    /// Combines a main header with the pending extension headers.
    fn member(&mut self, h: Header, at: u64) -> Result<TarMember, TarError> {
        let pending = std::mem::take(&mut self.pending);
        let local = &pending.pax;
        let global = &self.global;
        let get = |key| pax::lookup(local, global, key);
        let bad = |key: &'static str, v: &[u8]| TarError::BadPax {
            offset: at,
            expected: key,
            got: v.escape_ascii().to_string(),
        };
        let num = |key: &'static str, header: u64| -> Result<u64, TarError> {
            get(key).map_or(Ok(header), |v| pax::decimal(v).ok_or_else(|| bad(key, v)))
        };
        let size = num("size", h.size)?;
        let uid = num("uid", h.uid)?;
        let gid = num("gid", h.gid)?;
        let (mtime, mtime_nanos) = match get("mtime") {
            Some(v) => pax::time(v).ok_or_else(|| bad("mtime", v))?,
            None => (h.mtime, 0),
        };
        let sparse = h.typeflag == b'S' || local.has_sparse() || global.has_sparse();
        let path =
            get("GNU.sparse.name").or_else(|| get("path")).map(<[u8]>::to_vec).or(pending.long_name).unwrap_or(h.path);
        let link = get("linkpath").map(<[u8]>::to_vec).or(pending.long_link).unwrap_or(h.link);
        let kind = match h.typeflag {
            0 if path.ends_with(b"/") => EntryKind::Directory,
            b'0' | 0 | b'7' | b'S' => EntryKind::File,
            b'1' => EntryKind::HardLink,
            b'2' => EntryKind::Symlink,
            b'3' => EntryKind::CharDevice,
            b'4' => EntryKind::BlockDevice,
            b'5' => EntryKind::Directory,
            b'6' => EntryKind::Fifo,
            other => EntryKind::Other(other),
        };
        Ok(TarMember {
            header_offset: pending.start.unwrap_or(at),
            entry_offset: at,
            format: h.format,
            kind,
            typeflag: h.typeflag,
            size,
            mode: h.mode,
            uid,
            gid,
            uname: get("uname").map_or(h.uname, <[u8]>::to_vec),
            gname: get("gname").map_or(h.gname, <[u8]>::to_vec),
            mtime,
            mtime_nanos,
            link_target: matches!(kind, EntryKind::HardLink | EntryKind::Symlink).then_some(link),
            device: matches!(kind, EntryKind::CharDevice | EntryKind::BlockDevice).then_some(h.dev),
            sparse,
            data_start: at + BLOCK as u64,
            // GNU tar skips `size` bytes after every member except
            // directories (`skip_member`).
            data_len: if h.typeflag == b'5' { 0 } else { size },
            path,
        })
    }
}
